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
        var all = new Option<bool>("--all") { Description = "With --plan: list every tensor, not only the ones that were not placed as wanted" };
        var command = new Command("inspect", "Show a GGUF file's metadata and tensors, and optionally the placement plan");
        command.Arguments.Add(file);
        model.AddTo(command);
        command.Options.Add(plan);
        command.Options.Add(all);
        command.SetAction(parse =>
        {
            string path = parse.GetValue(file) ?? model.ResolveModelPath(parse, context);
            if (!File.Exists(path)) throw new UserErrorException($"model file not found: {path}");
            var gguf = GgufReader.Read(path);
            var console = context.CreateConsole();
            console.WriteLine($"{gguf.Path}: GGUF v{gguf.Version}, {gguf.FileLength:N0} B, alignment {gguf.Alignment}, tensor data at {gguf.DataSectionOffset:N0}");

            var meta = new Table().Title($"Metadata ({gguf.Metadata.Count} keys)").AddColumns("Key", "Type", "Value");
            foreach (var (key, value) in gguf.Metadata)
                meta.AddRow(Markup.Escape(key), Markup.Escape(value.IsArray ? $"{value.ElementType}[{value.Count}]" : value.Type.ToString()), Markup.Escape(Shorten(value.ToString(), 100)));
            console.Write(meta);

            var tensors = new Table().Title($"Tensors ({gguf.Tensors.Count})").AddColumns("Name", "Type", "Shape", "Bytes", "Offset");
            foreach (var t in gguf.Tensors)
                tensors.AddRow(Markup.Escape(t.Name), t.Info.Type.ToString(), Markup.Escape($"[{string.Join(", ", t.Info.Dims)}]"), t.ByteSize.ToString("N0"), t.FileOffset.ToString("N0"));
            console.Write(tensors);
            console.WriteLine($"total tensor bytes: {gguf.Tensors.Sum(t => t.ByteSize):N0}; parameters: {gguf.Tensors.Sum(t => t.Info.ElementCount):N0}");

            if (parse.GetValue(plan))
            {
                var (_, primary, cpu) = model.ResolveDevices(parse, context);
                var options = new ModelLoadOptions(primary, cpu, parse.GetValue(model.GpuLayers), model.ResolveLoadOptions(parse));
                var (schedule, placement) = LoadedModel.PlanOnly(gguf, options);
                context.Output.WriteLine();
                context.Output.WriteLine("Schedule:");
                context.Output.Write(schedule);
                context.Output.WriteLine("Placement plan:");
                context.Output.Write(placement.Format(everyTensor: parse.GetValue(all)));
            }
            return ExitCodes.Success;
        });
        return command;
    }

    private static string Shorten(string s, int max) => s.Length <= max ? s : s[..(max - 1)] + "…";
}
