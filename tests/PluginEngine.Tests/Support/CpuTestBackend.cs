using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Plugins;
using PluginEngine.Tests.Plugins;

namespace PluginEngine.Tests.Support;

/// <summary>
/// The real CPU plugin, loaded from the deployed plugins/cpu folder once per test process and thread count
/// (plugins are never unloaded, so one host serves every test), and a helper that loads a model file onto it.
/// </summary>
/// <remarks>
/// Whole-model tests use one thread by default: their models are tiny, and on a loaded machine the pool's
/// spin-waiting costs more CPU time than the split saves. Each output row is computed by exactly one thread, so
/// the thread count does not change results (a test checks that with <see cref="TwoThreadDevice"/>).
/// </remarks>
internal static class CpuTestBackend
{
    private static readonly Lazy<IBackendDevice> LazyDevice = new(() => LoadDevice(threads: 1));
    private static readonly Lazy<IBackendDevice> LazyTwoThreadDevice = new(() => LoadDevice(threads: 2));

    /// <summary>The CPU plugin's device, running its kernels on one thread.</summary>
    public static IBackendDevice Device => LazyDevice.Value;

    /// <summary>The CPU plugin's device from a second host, with a worker pool of two threads.</summary>
    public static IBackendDevice TwoThreadDevice => LazyTwoThreadDevice.Value;

    /// <summary>Loads <paramref name="path"/> with every layer on <paramref name="device"/> (default: <see cref="Device"/>), file-mapped.</summary>
    public static LoadedModel LoadModel(string path, IBackendDevice? device = null)
    {
        device ??= Device;
        return LoadedModel.Load(path, new ModelLoadOptions(device, device, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
    }

    private static IBackendDevice LoadDevice(int threads)
    {
        var config = PluginConfiguration.CreateDefault(PluginTestFiles.RepoRoot)
            .WithOption("cpu", "threads", threads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var host = PluginHost.Load(config);
        var candidate = host.Candidates.Single();
        if (!host.Backends.TryGetValue("cpu", out var backend))
            throw new InvalidOperationException($"the CPU plugin did not load from {PluginTestFiles.CpuPlugin}: {candidate.State} ({candidate.Reason})");
        var device = backend.Devices[0];
        if (!device.Description.Details.Contains($", {threads} threads", StringComparison.Ordinal))
            throw new InvalidOperationException($"asked the CPU plugin for {threads} threads; it describes itself as '{device.Description.Details}'");
        return device;
    }
}
