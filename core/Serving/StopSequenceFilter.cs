using System.Text;

namespace PluginEngine.Core.Serving;

/// <summary>
/// Streams an answer's text while watching for stop sequences: text that may still turn into a stop sequence is held
/// back until it cannot, and the answer is cut before the first stop sequence that appears. One filter per answer;
/// used by <see cref="Chat.ChatSession"/> and by the completion schedulers (docs/serve.md#stop-sequences).
/// </summary>
public sealed class StopSequenceFilter(IReadOnlyList<string> stopSequences)
{
    private readonly string[] _stops = stopSequences.Where(s => !string.IsNullOrEmpty(s)).ToArray();
    private readonly StringBuilder _answer = new();
    private int _emitted;

    /// <summary>The text handed out so far (never contains a stop sequence).</summary>
    public string Text => _answer.ToString(0, _emitted);

    /// <summary>True once a stop sequence appeared; the answer ends there.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds decoded text; returns the part that is now safe to hand out (empty when held back or stopped).</summary>
    public string Append(string text)
    {
        if (Stopped) return "";
        _answer.Append(text);
        return Release(final: false);
    }

    /// <summary>The answer is over (end of turn, length, cancelled): hands out what was held back, unless it holds a stop sequence.</summary>
    public string Flush() => Stopped ? "" : Release(final: true);

    private string Release(bool final)
    {
        string all = _answer.ToString();
        int end = all.Length;
        foreach (var stop in _stops)
        {
            int at = all.IndexOf(stop, Math.Max(0, _emitted - stop.Length + 1), StringComparison.Ordinal);
            if (at >= 0 && at < end) { end = at; Stopped = true; }
        }
        if (!Stopped && !final)
        {
            // Hold back the longest tail that is a proper prefix of some stop sequence.
            foreach (var stop in _stops)
                for (int k = Math.Min(stop.Length - 1, all.Length - _emitted); k > 0; k--)
                    if (all.AsSpan(all.Length - k).SequenceEqual(stop.AsSpan(0, k))) { end = Math.Min(end, all.Length - k); break; }
        }
        if (end <= _emitted) return "";
        string piece = all[_emitted..end];
        _emitted = end;
        return piece;
    }
}
