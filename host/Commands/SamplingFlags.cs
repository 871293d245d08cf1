using System.Globalization;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Host.Commands;

/// <summary>Sampling settings checked in the command line's words: the flag, the value given, and what it must be.</summary>
public static class SamplingFlags
{
    /// <summary>Throws <see cref="UserErrorException"/> naming the flag when a setting is out of range.</summary>
    public static void Validate(SamplerSettings settings)
    {
        try
        {
            settings.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            string flag = e.ParamName switch
            {
                nameof(SamplerSettings.Temperature) => "--temp",
                nameof(SamplerSettings.TopK) => "--top-k",
                nameof(SamplerSettings.TopP) => "--top-p",
                nameof(SamplerSettings.MinP) => "--min-p",
                nameof(SamplerSettings.RepeatPenalty) => "--repeat-penalty",
                nameof(SamplerSettings.RepeatLastN) => "--repeat-last-n",
                _ => e.ParamName ?? "a sampling flag",
            };
            // ArgumentOutOfRangeException appends "(Parameter 'X')" and "Actual value was Y." to the text: keep only the text.
            string text = e.Message;
            int cut = text.IndexOf(" (Parameter", StringComparison.Ordinal);
            if (cut >= 0) text = text[..cut];
            text = text.TrimEnd('.');
            string what = text.Length > 0 ? char.ToLowerInvariant(text[0]) + text[1..] : text;
            throw new UserErrorException(string.Create(CultureInfo.InvariantCulture, $"{flag} {e.ActualValue}: {what}"), isUsage: true);
        }
    }
}
