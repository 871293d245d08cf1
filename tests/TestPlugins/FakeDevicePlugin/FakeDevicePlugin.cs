using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>
/// A well-behaved test backend named "fake". Options: <c>score</c> (probe score, default 50) and
/// <c>devices</c> (how many devices to register, default 1; 0 exercises the host's zero-device rejection).
/// Each device's details name the plugins.json entry, so tests can tell which entry won. It does not implement
/// <see cref="IBackendPlugin.ApiMinorVersion"/>, so it loads as a plugin built for API 1.0 (an older minor).
/// </summary>
public sealed class FakeDevicePlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => PluginApi.Version;

    public ProbeResult Probe(PluginContext context)
        => ProbeResult.Available(context.Options.GetInt32("score", 50, 1, 1000), $"fake device for entry {context.PluginName}");

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        int count = context.Options.GetInt32("devices", 1, 0, 16);
        for (int i = 0; i < count; i++)
        {
            int index = i;
            services.AddSingleton<IBackendDevice>(_ => new FakeDevice(index, context.PluginName));
        }
    }
}

/// <summary>A device with 1 GiB of pretend memory whose buffers are managed arrays.</summary>
public sealed class FakeDevice : IBackendDevice
{
    public FakeDevice(int index, string entryName)
    {
        Description = new DeviceDescription("fake", $"Fake Device {index}", DeviceKind.Accelerator, $"fake:{index}",
                                             1L << 30, 1L << 29, BackendCapabilities.None, $"entry={entryName}");
        Buffers = new FakeBufferProvider(Description);
    }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }
}

/// <summary>Owned buffers only (the default for everything else).</summary>
public sealed class FakeBufferProvider(DeviceDescription device) : IBufferProvider
{
    public DeviceDescription Device { get; } = device;

    public BackendBuffer AllocateOwned(string name, long size) => new FakeBuffer(name, size);
}

/// <summary>An owned buffer over a managed array (address 0: the fake device uses opaque handles).</summary>
public sealed class FakeBuffer(string name, long size) : BackendBuffer(name, size)
{
    private readonly byte[] _bytes = new byte[checked((int)size)];

    public override nint DeviceAddress => 0;

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => source.CopyTo(_bytes.AsSpan((int)offset));

    protected override void MemsetCore(long offset, long length, byte value) => _bytes.AsSpan((int)offset, (int)length).Fill(value);

    protected override void DownloadCore(long offset, Span<byte> destination) => _bytes.AsSpan((int)offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore() { }
}
