using System.CommandLine;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Host.Commands;

/// <summary>
/// The sampling flags of the commands that generate (<c>run</c>, <c>chat</c>): declared once here, with their names,
/// defaults and help; each command adds them with <see cref="AddTo"/> and reads the settings with <see cref="Resolve"/>.
/// </summary>
public sealed class SamplingOptions
{
    public Option<float> Temperature { get; } = new("--temp") { Description = "Temperature (0 = greedy)", DefaultValueFactory = _ => 0.8f };
    public Option<int> TopK { get; } = new("--top-k") { Description = "Keep the K most likely tokens (0 = off)", DefaultValueFactory = _ => 40 };
    public Option<float> TopP { get; } = new("--top-p") { Description = "Nucleus sampling threshold (1 = off)", DefaultValueFactory = _ => 0.95f };
    public Option<float> MinP { get; } = new("--min-p") { Description = "Drop tokens below min-p × the best probability (0 = off)", DefaultValueFactory = _ => 0.05f };
    public Option<float> RepeatPenalty { get; } = new("--repeat-penalty") { Description = "Penalty for recently seen tokens (1 = off)", DefaultValueFactory = _ => 1.0f };
    public Option<int> RepeatLastN { get; } = new("--repeat-last-n") { Description = "How many recent tokens the penalty looks at", DefaultValueFactory = _ => 64 };
    public Option<long> Seed { get; } = new("--seed", "-s") { Description = "Sampling seed (default: random; same seed → same text)", DefaultValueFactory = _ => -1 };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Temperature, TopK, TopP, MinP, RepeatPenalty, RepeatLastN, Seed }) command.Options.Add(o);
    }

    /// <summary>The settings the flags give; an out-of-range value is a <see cref="UserErrorException"/> naming it.</summary>
    public SamplerSettings Resolve(ParseResult parse)
    {
        long seed = parse.GetValue(Seed);
        var settings = new SamplerSettings
        {
            Temperature = parse.GetValue(Temperature), TopK = parse.GetValue(TopK), TopP = parse.GetValue(TopP), MinP = parse.GetValue(MinP),
            RepeatPenalty = parse.GetValue(RepeatPenalty), RepeatLastN = parse.GetValue(RepeatLastN),
            Seed = seed < 0 ? (ulong)Random.Shared.NextInt64() : (ulong)seed,
        };
        SamplingFlags.Validate(settings);
        return settings;
    }
}
