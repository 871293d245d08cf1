using System.CommandLine;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using Spectre.Console;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine inspect [MODEL] [--plan] [--backend X] …</c>: metadata, tensors (type, shape, bytes, offset) and,
/// with <c>--plan</c>, where every tensor would live on the selected devices and why (owned, imported or copied, slides).
/// </summary>
public static class InspectCommand
{
    public static Command Create(CliContext context)
    {
        var model = new ModelOptions();
        var file = new Argument<string?>("MODEL") { Description = "GGUF file (default: -m, else the demo model)", Arity = ArgumentArity.ZeroOrOne };
        var plan = new Option<bool>("--plan") { Description = "Print the placement plan: per device, owned/imported/copied tensors, slides and why" };
        var all = new Option<bool>("--all") { Description = $"List every metadata key and tensor (default: the first {ListedRows}) and, with --plan, every tensor's placement" };
        var command = new Command("inspect", "Show a GGUF file's metadata and tensors, and optionally the placement plan");
        command.Arguments.Add(file);
        model.AddTo(command);
        command.Options.Add(plan);
        command.Options.Add(all);
        command.SetAction(parse =>
        {
            if (parse.GetValue(file) is not null && parse.GetValue(model.Model) is { } other)
                throw new UserErrorException($"the model is given twice ('{parse.GetValue(file)}' and -m '{other}'); give it once, as MODEL or with -m", isUsage: true);
            if (!parse.GetValue(plan))
            {
                // These flags only shape the placement plan: given without --plan they would be silently ignored.
                var planOnly = new Option[] { model.Backend, model.GpuLayers, model.Threads, model.HugePages, model.NoMmap, model.HostImport, model.NoHostImport, model.CheckTensors, model.SplitMode, model.TensorSplit, model.MainGpu };
                if (planOnly.FirstOrDefault(o => parse.GetResult(o) is { Implicit: false }) is { } given)
                    throw new UserErrorException($"{given.Name} takes effect only with --plan (add --plan to see where the tensors would go)", isUsage: true);
            }
            string path = parse.GetValue(file) ?? model.ResolveModelPath(parse, context);
            ModelFileCheck.RequireFile(path);
            var gguf = GgufReader.Read(path);
            bool everything = parse.GetValue(all);
            var console = context.CreateConsole();
            console.WriteLine($"{gguf.Path}: GGUF v{gguf.Version}, {gguf.FileLength:N0} B, alignment {gguf.Alignment}, tensor data at {gguf.DataSectionOffset:N0}");

            // Proportional output: a file with 580k keys or tensors gets the first rows and a count, not a 580k-row table
            // (Spectre lays tables out in memory); --all lists everything.
            int metaShown = everything ? gguf.Metadata.Count : Math.Min(gguf.Metadata.Count, ListedRows);
            var meta = new Table().Title($"Metadata ({gguf.Metadata.Count} keys{(metaShown < gguf.Metadata.Count ? $", first {metaShown} shown" : "")})").AddColumns("Key", "Type", "Value");
            foreach (var (key, value) in gguf.Metadata.Take(metaShown))
                meta.AddRow(Markup.Escape(Shorten(key, 100)), Markup.Escape(value.IsArray ? $"{value.ElementType}[{value.Count}]" : value.Type.ToString()), Markup.Escape(Shorten(value.ToString(), 100)));
            console.Write(meta);
            if (metaShown < gguf.Metadata.Count) console.WriteLine($"… {gguf.Metadata.Count - metaShown:N0} more keys (--all lists them)");

            int tensorsShown = everything ? gguf.Tensors.Count : Math.Min(gguf.Tensors.Count, ListedRows);
            var tensors = new Table().Title($"Tensors ({gguf.Tensors.Count}{(tensorsShown < gguf.Tensors.Count ? $", first {tensorsShown} shown" : "")})").AddColumns("Name", "Type", "Shape", "Bytes", "Offset");
            foreach (var t in gguf.Tensors.Take(tensorsShown))
                tensors.AddRow(Markup.Escape(Shorten(t.Name, 100)), t.Info.Type.ToString(), Markup.Escape($"[{string.Join(", ", t.Info.Dims)}]"), t.ByteSize.ToString("N0"), t.FileOffset.ToString("N0"));
            console.Write(tensors);
            if (tensorsShown < gguf.Tensors.Count) console.WriteLine($"… {gguf.Tensors.Count - tensorsShown:N0} more tensors (--all lists them)");
            console.WriteLine($"total tensor bytes: {gguf.Tensors.Sum(t => t.ByteSize):N0}; parameters: {gguf.Tensors.Sum(t => t.Info.ElementCount):N0}");

            if (parse.GetValue(plan))
            {
                var options = model.ResolveLoadOptions(parse, context, model.ResolveSplit(parse));
                string schedule;
                PlacementPlan placement;
                try { (schedule, placement) = LoadedModel.PlanOnly(gguf, options); }
                catch (SplitConfigException e) { throw new UserErrorException(e.Message, isUsage: true); }
                catch (ModelDoesNotFitException e) { throw new UserErrorException(e.Message); }
                context.Output.WriteLine();
                context.Output.WriteLine("Schedule:");
                context.Output.Write(schedule);
                context.Output.WriteLine("Placement plan:");
                context.Output.Write(placement.Format(everyTensor: everything));
            }
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>Rows of the metadata and tensor tables shown without --all.</summary>
    private const int ListedRows = 200;

    private static string Shorten(string s, int max) => s.Length <= max ? s : s[..(max - 1)] + "…";
}
