using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Serving;

namespace PluginEngine.Server;

/// <summary>The server's counters, written in Prometheus' text format at <c>/metrics</c> (docs/serve.md#metrics).</summary>
public sealed class ServerMetrics
{
    private readonly ConcurrentDictionary<(string Endpoint, int Status), long> _requests = new();
    private readonly ConcurrentDictionary<string, long> _finishReasons = new();
    private long _generationTicks, _generatedTokens;
    private double _lastTokensPerSecond;

    /// <summary>Counts a finished HTTP request by endpoint and status.</summary>
    public void CountRequest(string endpoint, int status) => _requests.AddOrUpdate((endpoint, status), 1, (_, n) => n + 1);

    /// <summary>Records a completion's outcome and decode speed.</summary>
    public void CountCompletion(CompletionResult result, string finishReason)
    {
        _finishReasons.AddOrUpdate(finishReason, 1, (_, n) => n + 1);
        Interlocked.Add(ref _generationTicks, result.GenerationTime.Ticks);
        Interlocked.Add(ref _generatedTokens, result.GeneratedTokens);
        if (result.GeneratedTokens > 0 && result.GenerationTime > TimeSpan.Zero)
            Volatile.Write(ref _lastTokensPerSecond, result.GeneratedTokens / result.GenerationTime.TotalSeconds);
    }

    public string Format(SchedulerStatistics s, string modelId)
    {
        var text = new StringBuilder();
        string model = Label(modelId);
        void Metric(string name, string type, string help, FormattableString? single = null)
        {
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            if (single is not null) text.Append(name).Append(single.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        Metric("pluginengine_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
        foreach (var ((endpoint, status), count) in _requests.OrderBy(kv => kv.Key.Endpoint, StringComparer.Ordinal).ThenBy(kv => kv.Key.Status))
            text.Append(CultureInfo.InvariantCulture, $"pluginengine_requests_total{{endpoint=\"{Label(endpoint)}\",status=\"{status}\"}} {count}\n");
        Metric("pluginengine_completions_total", "counter", "Completions finished, by finish reason (cancelled: the client left or the server shut down).");
        foreach (var (reason, count) in _finishReasons.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            text.Append(CultureInfo.InvariantCulture, $"pluginengine_completions_total{{model=\"{model}\",finish_reason=\"{Label(reason)}\"}} {count}\n");
        Metric("pluginengine_prompt_tokens_total", "counter", "Prompt tokens evaluated.", $"{{model=\"{model}\"}} {s.PromptTokens}");
        Metric("pluginengine_generated_tokens_total", "counter", "Tokens sampled.", $"{{model=\"{model}\"}} {s.GeneratedTokens}");
        Metric("pluginengine_forward_passes_total", "counter", "Forward passes of the model (prompt chunks and decode steps).", $"{{model=\"{model}\"}} {s.Steps}");
        Metric("pluginengine_generation_seconds_total", "counter", "Time spent generating, summed over completions (generated tokens / this = mean per-request decode rate).",
            $"{{model=\"{model}\"}} {TimeSpan.FromTicks(Interlocked.Read(ref _generationTicks)).TotalSeconds}");
        Metric("pluginengine_last_generation_tokens_per_second", "gauge", "Decode rate of the most recent completion.", $"{{model=\"{model}\"}} {Volatile.Read(ref _lastTokensPerSecond)}");
        Metric("pluginengine_queue_depth", "gauge", "Requests waiting for a slot.", $"{{model=\"{model}\"}} {s.Queued}");
        Metric("pluginengine_slots_busy", "gauge", "Slots running a request.", $"{{model=\"{model}\"}} {s.BusySlots}");
        Metric("pluginengine_slots", "gauge", "Slots (sequences decoded together, -np).", $"{{model=\"{model}\"}} {s.Slots}");
        Metric("pluginengine_requests_completed_total", "counter", "Requests the scheduler finished, for any reason.", $"{{model=\"{model}\"}} {s.RequestsCompleted}");
        return text.ToString();
    }

    private static string Label(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    /// <summary>OpenAI's finish_reason for a stop reason (docs/serve.md#finish-reasons).</summary>
    public static string FinishReason(ChatStopReason reason) => reason switch
    {
        ChatStopReason.EndOfTurn or ChatStopReason.StopSequence => "stop",
        // Cut short: by the limit, a full context, or cancellation (shutdown) — OpenAI has no other word for a truncated answer.
        _ => "length",
    };
}
