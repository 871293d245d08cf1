using System.Runtime.InteropServices;
using System.Text;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda.Native;

/// <summary>
/// The NVRTC runtime compiler (libnvrtc.so.13 / .12 / libnvrtc.so; 11.2 is Debian's CUDA 11.8 package, enough to compile for sm_90 with no GPU), bound through function pointers like
/// <see cref="CudaDriver"/>. Compiles CUDA C to a CUBIN for sm_XY, or to PTX for compute_XY when this NVRTC
/// does not know the device's architecture (the driver then JIT-compiles the PTX).
/// </summary>
internal sealed unsafe class Nvrtc
{
    /// <summary>Library names tried, in order (newest first).</summary>
    public static readonly string[] LibraryNames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.11.2", "nvrtc64_130_0.dll", "nvrtc64_120_0.dll"];

    private delegate* unmanaged<int*, int*, int> _version;
    private delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private delegate* unmanaged<nint, int, byte**, int> _compileProgram;
    private delegate* unmanaged<nint*, int> _destroyProgram;
    private delegate* unmanaged<nint, nuint*, int> _getLogSize;
    private delegate* unmanaged<nint, byte*, int> _getLog;
    private delegate* unmanaged<nint, nuint*, int> _getCubinSize;
    private delegate* unmanaged<nint, byte*, int> _getCubin;
    private delegate* unmanaged<nint, nuint*, int> _getPtxSize;
    private delegate* unmanaged<nint, byte*, int> _getPtx;

    private Nvrtc() { }

    /// <summary>Which library file was loaded.</summary>
    public string LibraryName { get; private set; } = "";

    /// <summary>NVRTC version as "major.minor".</summary>
    public string Version { get; private set; } = "";

    /// <summary>Loads NVRTC from the usual names, then from <paramref name="extraFolders"/>; null with the reason when absent.</summary>
    public static Nvrtc? TryLoad(IEnumerable<string> extraFolders, out string? failure)
    {
        var (handle, loaded) = NativeLibraryLoader.TryLoadFirst(LibraryNames, extraFolders);
        if (handle == 0)
        {
            failure = "libnvrtc.so.13 / libnvrtc.so.12 not found (install the CUDA toolkit's NVRTC, or put its lib64 folder on LD_LIBRARY_PATH)";
            return null;
        }
        var n = new Nvrtc { LibraryName = loaded };
        var symbols = new NativeSymbols(handle);
        n._version = (delegate* unmanaged<int*, int*, int>)symbols.Required("nvrtcVersion");
        n._createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)symbols.Required("nvrtcCreateProgram");
        n._compileProgram = (delegate* unmanaged<nint, int, byte**, int>)symbols.Required("nvrtcCompileProgram");
        n._destroyProgram = (delegate* unmanaged<nint*, int>)symbols.Required("nvrtcDestroyProgram");
        n._getLogSize = (delegate* unmanaged<nint, nuint*, int>)symbols.Required("nvrtcGetProgramLogSize");
        n._getLog = (delegate* unmanaged<nint, byte*, int>)symbols.Required("nvrtcGetProgramLog");
        n._getCubinSize = (delegate* unmanaged<nint, nuint*, int>)symbols.Required("nvrtcGetCUBINSize");
        n._getCubin = (delegate* unmanaged<nint, byte*, int>)symbols.Required("nvrtcGetCUBIN");
        n._getPtxSize = (delegate* unmanaged<nint, nuint*, int>)symbols.Required("nvrtcGetPTXSize");
        n._getPtx = (delegate* unmanaged<nint, byte*, int>)symbols.Required("nvrtcGetPTX");
        if (symbols.Missing is { } missing)
        {
            failure = $"{loaded} {missing}";
            return null;
        }
        int major, minor;
        n._version(&major, &minor);
        n.Version = $"{major}.{minor}";
        failure = null;
        return n;
    }

    /// <summary>
    /// Compiles <paramref name="source"/> for compute capability <paramref name="major"/>.<paramref name="minor"/>.
    /// Returns the image (a CUBIN, or NUL-terminated PTX when only the virtual architecture is accepted) and which it is.
    /// </summary>
    public (byte[] Image, bool IsCubin) Compile(string source, string programName, int major, int minor, IReadOnlyList<string> extraOptions)
    {
        var (image, isCubin, _) = CompileWithLog(source, programName, major, minor, extraOptions);
        return (image, isCubin);
    }

    /// <summary><see cref="Compile"/>, also returning the compiler's log (with <c>--ptxas-options=-v</c>: registers per kernel).</summary>
    public (byte[] Image, bool IsCubin, string Log) CompileWithLog(string source, string programName, int major, int minor, IReadOnlyList<string> extraOptions)
    {
        string arch = $"{major}{minor}";
        var logs = new StringBuilder();
        // A real architecture gives a CUBIN (no JIT at load); an NVRTC older than the GPU only knows compute_XY of an older chip.
        foreach (var (option, cubin) in new[] { ($"--gpu-architecture=sm_{arch}", true), ($"--gpu-architecture=compute_{arch}", false) })
        {
            var options = new List<string>(extraOptions) { option };
            var (image, log) = CompileOnce(source, programName, options, cubin);
            if (image is not null) return (image, cubin, log);
            logs.Append(option).Append(": ").AppendLine(log.Trim());
        }
        throw new KernelCompileException($"NVRTC {Version} could not compile {programName} for sm_{arch}:\n{logs}");
    }

    private (byte[]? Image, string Log) CompileOnce(string source, string programName, IReadOnlyList<string> options, bool cubin)
    {
        byte[] src = NulTerminated(source), name = NulTerminated(programName);
        byte[][] opts = options.Select(NulTerminated).ToArray();
        var handles = opts.Select(o => GCHandle.Alloc(o, GCHandleType.Pinned)).ToArray();
        nint program = 0;
        try
        {
            byte** optPtrs = stackalloc byte*[opts.Length];
            for (int i = 0; i < opts.Length; i++) optPtrs[i] = (byte*)handles[i].AddrOfPinnedObject();
            fixed (byte* s = src, n = name)
            {
                int r = _createProgram(&program, s, n, 0, null, null);
                if (r != 0) return (null, $"nvrtcCreateProgram returned {r}");
            }
            int compiled = _compileProgram(program, opts.Length, optPtrs);
            string log = Log(program);
            if (compiled != 0) return (null, string.IsNullOrWhiteSpace(log) ? $"nvrtcCompileProgram returned {compiled}" : log);
            nuint size;
            int got = cubin ? _getCubinSize(program, &size) : _getPtxSize(program, &size);
            if (got != 0) return (null, $"nvrtcGet{(cubin ? "CUBIN" : "PTX")}Size returned {got}");
            var image = new byte[(int)size];
            fixed (byte* p = image) got = cubin ? _getCubin(program, p) : _getPtx(program, p);
            return got == 0 ? (image, log) : (null, $"nvrtcGet{(cubin ? "CUBIN" : "PTX")} returned {got}");
        }
        finally
        {
            if (program != 0) _destroyProgram(&program);
            foreach (var h in handles) h.Free();
        }
    }

    private string Log(nint program)
    {
        nuint size;
        if (_getLogSize(program, &size) != 0 || size <= 1) return "";
        var log = new byte[(int)size];
        fixed (byte* p = log) _getLog(program, p);
        return Encoding.UTF8.GetString(log, 0, log.Length - 1);
    }

    private static byte[] NulTerminated(string s)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}
