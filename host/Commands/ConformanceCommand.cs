using System.CommandLine;
using PluginEngine.Core.Conformance;
using PluginEngine.Core.Models;
using PluginEngine.Core.Serving;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine conformance --backend X [--plugins FILE] [--types f32,q4_0,…] [--models DIR]</c>: the model-level
/// correctness checks of <see cref="ModelChecks"/> for backend X against the cpu backend of the same plugin list — logits of
/// every generated weight type with all layers, with <c>-ngl 1</c> and split 1:1 over the backend's first two devices (skipped
/// with one device; docs/multi-gpu.md), the seed regression with clean and dirty gaps, and the batching check
/// (<see cref="BatchedGreedyCheck"/>: 8 concurrent greedy requests equal each alone — exactly, with no near-tie allowance,
/// when the backend is the cpu backend itself, whose results do not depend on the batch, or with <c>--exact</c> (a backend run with
/// a batch-invariant option, docs/batching.md); <c>--batching</c> runs it alone).
/// One line per check (PASS, FAIL or SKIP with its numbers or reason); exit code 3 when any fails. The op-level cases are
/// the conformance kit's (the PluginEngine.Conformance package; see plugins/README.md).
/// </summary>
public static class ConformanceCommand
{
    public static Command Create(CliContext context)
    {
        var backend = new Option<string>("--backend") { Description = "Backend to check against the cpu backend", HelpName = "NAME", Required = true };
        var types = new Option<string?>("--types") { Description = $"Weight types of the generated models (default: {string.Join(",", ModelChecks.DefaultTypes).ToLowerInvariant()})", HelpName = "T[,T]" };
        var models = new Option<string?>("--models") { Description = "Folder for the generated models (default: a temporary folder, deleted afterwards)", HelpName = "DIR" };
        var batchingOnly = new Option<bool>("--batching") { Description = "Run only the batching check: 8 concurrent greedy requests must each equal the request sent alone" };
        var exact = new Option<bool>("--exact") { Description = "The batching check allows no near-ties (always so for the cpu backend; for a backend run with a batch-invariant option, e.g. cuda's batch_invariant on)" };
        var command = new Command("conformance", "Check a backend's logits against the cpu backend on generated models (every weight type, -ngl 1, seed regression, batching)");
        foreach (var o in new Option[] { backend, types, models, batchingOnly, exact }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            var selected = ParseTypes(parse.GetValue(types));
            var host = context.LoadPlugins();
            var target = host.GetBackend(parse.GetValue(backend)!);
            if (!host.Backends.TryGetValue("cpu", out var cpu))
                throw new UserErrorException($"conformance compares with the cpu backend, which is not loaded from {host.Configuration.FilePath}: " +
                    string.Join("; ", host.Candidates.Where(c => c.Name == "cpu").Select(c => c.Reason).DefaultIfEmpty("it has no entry named cpu")));
            string? given = parse.GetValue(models);
            string folder = given ?? Directory.CreateTempSubdirectory("pluginengine-conformance-").FullName;
            var err = context.Error;
            err.WriteLine($"conformance: {target.Name} ({target.Devices[0].Description.Name}) vs cpu ({cpu.Devices[0].Description.Name}), plugins from {host.Configuration.FilePath}");
            try
            {
                void Report(ModelCheckResult r) => context.Output.WriteLine($"{(r.Passed is null ? "SKIP" : r.Passed.Value ? "PASS" : "FAIL")}  {r.Name}: {r.Detail}");
                var results = parse.GetValue(batchingOnly) ? [] : new ModelChecks(target.Devices[0], cpu.Devices[0], folder) { SplitDevices = target.Devices }.Run(selected, Report);
                var batching = BatchedGreedyCheck.Run(target.Devices[0], cpu.Devices[0], folder, exact: target.Name == "cpu" || parse.GetValue(exact));
                Report(batching);
                results.Add(batching);
                int failed = results.Count(r => r.Passed == false), passed = results.Count(r => r.Passed == true), skipped = results.Count(r => r.Passed is null);
                context.Output.WriteLine($"conformance {target.Name}: {passed} passed, {failed} failed, {skipped} skipped");
                return failed == 0 ? ExitCodes.Success : ExitCodes.ChecksFailed;
            }
            finally
            {
                if (given is null) { try { Directory.Delete(folder, recursive: true); } catch (IOException) { } }
            }
        });
        return command;
    }

    private static IReadOnlyList<SyntheticWeightType> ParseTypes(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return ModelChecks.DefaultTypes;
        var list = new List<SyntheticWeightType>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            list.Add(Enum.TryParse<SyntheticWeightType>(part, ignoreCase: true, out var t) && Enum.IsDefined(t) ? t
                : throw new UserErrorException($"--types: '{part}' is not a weight type ({string.Join(", ", Enum.GetNames<SyntheticWeightType>()).ToLowerInvariant()})"));
        return list;
    }
}
