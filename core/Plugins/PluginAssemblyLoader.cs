using System.Reflection;
using McMaster.NETCore.Plugins;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Plugins;

/// <summary>A plugin assembly could not be turned into an <see cref="IBackendPlugin"/>; the message is the rejection reason.</summary>
public sealed class PluginLoadException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The one adapter over McMaster.NETCore.Plugins (nothing else references it). Each plugin assembly gets its own
/// load context, so plugins may ship conflicting private dependencies; the contracts assembly and the
/// Microsoft.Extensions DI/logging abstractions are shared with the host, so <see cref="IBackendPlugin"/>,
/// <see cref="IServiceCollection"/> and <see cref="ILoggerFactory"/> mean the same types on both sides.
/// Load contexts are never unloaded: GPU plugins load native runtimes (libcuda, libamdhip64, libOpenCL) that
/// start threads and register process-wide state, and cannot be unloaded safely.
/// </summary>
public sealed class PluginAssemblyLoader
{
    private static readonly Type[] SharedTypes = [typeof(IBackendPlugin), typeof(IServiceCollection), typeof(ILogger), typeof(ILoggerFactory)];

    // Kept so the load contexts stay reachable for the life of the process (see the class comment).
    private readonly List<PluginLoader> _loaders = [];

    /// <summary>
    /// Loads <paramref name="assemblyPath"/> in a new load context and creates its single public non-abstract
    /// <see cref="IBackendPlugin"/> type with its parameterless constructor.
    /// </summary>
    /// <exception cref="PluginLoadException">The file is missing, not a .NET assembly, compiled against other contracts,
    /// has no (or several) entry types, or the entry's constructor failed. The message says which.</exception>
    public IBackendPlugin CreateEntry(string assemblyPath)
    {
        if (!File.Exists(assemblyPath)) throw new PluginLoadException($"assembly not found: {assemblyPath}");

        Assembly assembly;
        try
        {
            var loader = PluginLoader.CreateFromAssemblyFile(assemblyPath, SharedTypes, config =>
            {
                config.PreferSharedTypes = true;
                config.IsUnloadable = false;
            });
            lock (_loaders) _loaders.Add(loader);
            assembly = loader.LoadDefaultAssembly();
        }
        catch (BadImageFormatException e)
        {
            throw new PluginLoadException($"not a loadable .NET assembly: {assemblyPath} ({e.Message})", e);
        }
        catch (Exception e) when (IsTypeLoadFailure(e))
        {
            throw Incompatible(e);
        }

        Type entryType = FindEntryType(assembly, assemblyPath);
        try
        {
            return (IBackendPlugin)Activator.CreateInstance(entryType)!;
        }
        catch (MissingMethodException e) when (entryType.GetConstructor(Type.EmptyTypes) is null)
        {
            throw new PluginLoadException($"entry type {entryType.FullName} has no public parameterless constructor", e);
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw new PluginLoadException($"constructor of {entryType.FullName} threw {e.InnerException.GetType().Name}: {e.InnerException.Message}", e.InnerException);
        }
        catch (Exception e) when (IsTypeLoadFailure(e))
        {
            throw Incompatible(e);
        }
    }

    private static Type FindEntryType(Assembly assembly, string assemblyPath)
    {
        List<Type> entries;
        try
        {
            // IsAssignableFrom forces each type to load: a type compiled against another contracts assembly
            // (missing interface members, changed signatures) fails here with a TypeLoadException.
            entries = assembly.GetExportedTypes()
                .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IBackendPlugin).IsAssignableFrom(t))
                .ToList();
        }
        catch (Exception e) when (IsTypeLoadFailure(e))
        {
            throw Incompatible(e);
        }

        return entries.Count switch
        {
            1 => entries[0],
            0 => throw new PluginLoadException(
                $"no public non-abstract type implementing {typeof(IBackendPlugin).FullName} in {Path.GetFileName(assemblyPath)} " +
                "(a plugin that ships its own copy of PluginEngine.Abstractions.dll is not recognised: reference it with Private=false)"),
            _ => throw new PluginLoadException(
                $"several entry types in {Path.GetFileName(assemblyPath)}: {string.Join(", ", entries.Select(t => t.FullName))}; a plugin exposes exactly one"),
        };
    }

    private static bool IsTypeLoadFailure(Exception e)
        => e is TypeLoadException or ReflectionTypeLoadException or MissingMemberException or FileLoadException or FileNotFoundException;

    private static PluginLoadException Incompatible(Exception e)
    {
        // A dependency that cannot be found is only a contracts problem when it is one of the shared assemblies
        // (e.g. the plugin wants PluginEngine.Abstractions 2.0 and the host has 1.0); otherwise the plugin folder is incomplete.
        string? missingFile = e switch { FileNotFoundException f => f.FileName, FileLoadException f => f.FileName, _ => null };
        if (missingFile is not null && !SharedTypes.Any(t => missingFile.StartsWith(t.Assembly.GetName().Name + ",", StringComparison.OrdinalIgnoreCase)))
            return new PluginLoadException($"a dependency could not be loaded (is the plugin folder complete?): {e.Message}", e);
        string detail = e is ReflectionTypeLoadException r
            ? string.Join("; ", r.LoaderExceptions.Where(x => x is not null).Select(x => x!.Message).Distinct())
            : e.Message;
        return new PluginLoadException($"incompatible with host contracts: {detail}", e);
    }
}
