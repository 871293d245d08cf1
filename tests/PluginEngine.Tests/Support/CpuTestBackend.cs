using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Plugins;
using PluginEngine.Tests.Plugins;

namespace PluginEngine.Tests.Support;

/// <summary>
/// The real CPU plugin, loaded once per test process from the deployed plugins/cpu folder (plugins are never
/// unloaded, so one host serves every test), and a helper that loads a model file onto it.
/// </summary>
internal static class CpuTestBackend
{
    private static readonly Lazy<IBackendDevice> LazyDevice = new(LoadDevice);

    /// <summary>The CPU plugin's device.</summary>
    public static IBackendDevice Device => LazyDevice.Value;

    /// <summary>Loads <paramref name="path"/> with every layer on the CPU device (file mapping, the default memory mode).</summary>
    public static LoadedModel LoadModel(string path)
        => LoadedModel.Load(path, new ModelLoadOptions(Device, Device, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);

    private static IBackendDevice LoadDevice()
    {
        var host = PluginHost.Load(PluginConfiguration.CreateDefault(PluginTestFiles.RepoRoot));
        var candidate = host.Candidates.Single();
        if (!host.Backends.TryGetValue("cpu", out var backend))
            throw new InvalidOperationException($"the CPU plugin did not load from {PluginTestFiles.CpuPlugin}: {candidate.State} ({candidate.Reason})");
        return backend.Devices[0];
    }
}
