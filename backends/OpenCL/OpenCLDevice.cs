using System.Text;
using PluginEngine.Abstractions;
using Silk.NET.OpenCL;

namespace PluginEngine.Backends.OpenCL;

/// <summary>
/// One OpenCL device: its context, the single in-order command queue every buffer transfer and every op of this
/// device is enqueued on (so a buffer read is always ordered after the ops that wrote it), and the kernel program,
/// built once when the device is created. The device lives as long as the process (plugins are never unloaded, and
/// buffers of any model may still reference the context), so it is deliberately not disposable.
/// </summary>
public sealed unsafe class OpenCLDevice : IBackendDevice
{
    private readonly OpenCLDeviceInfo _info;

    internal OpenCLDevice(OpenCLDeviceInfo info)
    {
        _info = info;
        Api = OpenCLRuntime.Api;
        nint device = info.Device;
        int err;
        Context = Api.CreateContext(null, 1, &device, null, null, &err);
        OpenCLRuntime.Check(err, "clCreateContext");
        Queue = Api.CreateCommandQueue(Context, device, (CommandQueueProperties)0, &err);
        OpenCLRuntime.Check(err, "clCreateCommandQueue");
        Program = BuildProgram();

        var kind = info.HostUnifiedMemory ? DeviceKind.IntegratedGpu
            : info.Type == OpenCLRuntime.DeviceTypeCpu ? DeviceKind.Cpu
            : info.Type == OpenCLRuntime.DeviceTypeAccelerator ? DeviceKind.Accelerator
            : DeviceKind.DiscreteGpu;
        string stableId = info.PciBusId is { } pci
            ? $"pci:{pci}"
            : $"opencl:{info.PlatformName}/{info.DeviceName}#{info.PlatformIndex}.{info.DeviceIndex}";
        string type = info.Type == OpenCLRuntime.DeviceTypeCpu ? "CPU" : info.Type == OpenCLRuntime.DeviceTypeGpu ? "GPU" : info.Type == OpenCLRuntime.DeviceTypeAccelerator ? "accelerator" : $"type 0x{info.Type:x}";
        Description = new DeviceDescription(
            Backend: "opencl",
            Name: info.DeviceName,
            Kind: kind,
            StableId: stableId,
            TotalMemory: info.GlobalMemory,
            FreeMemory: info.GlobalMemory,
            Capabilities: BackendCapabilities.HostImport,
            Details: $"{info.PlatformName}, {info.Vendor}, {type}, {info.Version}, driver {info.DriverVersion}, {info.ComputeUnits} compute units, " +
                     $"unified memory {(info.HostUnifiedMemory ? "yes" : "no")}, max allocation {info.MaxAllocation >> 20} MiB, " +
                     $"{(info.CpuShapedKernels ? "CPU" : "GPU")}-shaped matmul and attention kernels");
        Buffers = new OpenCLBufferProvider(this);
    }

    internal CL Api { get; }

    /// <summary>cl_context of this device.</summary>
    internal nint Context { get; }

    /// <summary>The device's one in-order cl_command_queue.</summary>
    internal nint Queue { get; }

    /// <summary>The built kernel program (kernels are created from it per compute queue: cl_kernel arguments are not thread-safe).</summary>
    internal nint Program { get; }

    /// <summary>
    /// True when matmul and attention use the CPU-shaped kernels (<c>mul_*_cpu_*</c>, <c>attention_cpu_*</c>: a work-item
    /// per few rows or per (head, token), no local memory or barriers), which CPU drivers such as PoCL run several times
    /// faster than the GPU-shaped work-group kernels.
    /// </summary>
    internal bool CpuShapedKernels => _info.CpuShapedKernels;

    /// <summary>Weight rows per work-item of the CPU-shaped matmul kernels (CPU_ROWS in Kernels/ops.cl).</summary>
    internal const int CpuMatMulRows = 2;

    /// <summary>Tokens per tile of the CPU-shaped batched matmul kernels (CPU_TOKENS in Kernels/ops.cl).</summary>
    internal const int CpuMatMulTokens = 4;

    /// <summary>CL_DEVICE_MAX_COMPUTE_UNITS (the threads of a CPU driver such as PoCL), at least 1.</summary>
    internal int ComputeUnits => (int)Math.Clamp(_info.ComputeUnits, 1u, 4096u);

    /// <summary>Largest single allocation the device accepts.</summary>
    internal long MaxAllocation => _info.MaxAllocation;

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }

    public IComputeQueue CreateQueue() => new OpenCLComputeQueue(this);

    /// <summary>Waits for everything enqueued on the device's queue.</summary>
    internal void Finish() => OpenCLRuntime.Check(Api.Finish(Queue), "clFinish");

    private nint BuildProgram()
    {
        string source;
        using (var stream = typeof(OpenCLDevice).Assembly.GetManifestResourceStream("PluginEngine.Backends.OpenCL.Kernels.ops.cl")
            ?? throw new OpenCLException("opencl: embedded kernel source Kernels/ops.cl is missing from the plugin assembly"))
        using (var reader = new StreamReader(stream))
            source = reader.ReadToEnd();

        int err;
        nint program = Api.CreateProgramWithSource(Context, 1, [source], null, &err);
        OpenCLRuntime.Check(err, "clCreateProgramWithSource");
        nint device = _info.Device;
        // The CPU kernels' tile sizes come from here, so the host's launch arithmetic and the kernels cannot disagree.
        string options = $"-cl-std=CL1.2 -DCPU_ROWS={CpuMatMulRows} -DCPU_TOKENS={CpuMatMulTokens}";
        err = Api.BuildProgram(program, 1, &device, options, null, null);
        if (err != 0)
        {
            string log = BuildLog(program, device);
            Api.ReleaseProgram(program);
            throw new OpenCLException($"opencl: building Kernels/ops.cl for {_info.DeviceName} failed with {OpenCLRuntime.ErrorName(err)} ({err}):\n{log}");
        }
        return program;
    }

    private string BuildLog(nint program, nint device)
    {
        nuint size = 0;
        if (Api.GetProgramBuildInfo(program, device, (ProgramBuildInfo)OpenCLRuntime.ProgramBuildLog, 0, null, &size) != 0 || size == 0) return "(no build log)";
        var bytes = new byte[(int)size];
        fixed (byte* p = bytes)
            if (Api.GetProgramBuildInfo(program, device, (ProgramBuildInfo)OpenCLRuntime.ProgramBuildLog, size, p, null) != 0) return "(build log unavailable)";
        return Encoding.UTF8.GetString(bytes).TrimEnd('\0', '\n', ' ');
    }
}
