using System.Runtime.InteropServices;
using System.Text;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Hip.Native;

/// <summary>
/// hiprtc, HIP's run-time compiler: libhiprtc.so.7 / .6 (ROCm 6 split it out of the runtime), else the HIP runtime
/// library itself, which exported it up to ROCm 5 (Debian's ROCm 5.2: libamdhip64.so.5, with libhiprtc-builtins.so.5
/// holding its headers). Compiles HIP C++ to an AMDGPU code object for one <c>--offload-arch</c>. Bound like
/// <see cref="HipApi"/>. Careful: ROCm 5.2's hiprtc kills the whole process when asked for a target it does not know
/// (gfx1100); the plugin only asks for the device's own.
/// </summary>
internal sealed unsafe class Hiprtc
{
    /// <summary>Library names tried before the HIP runtime's own exports.</summary>
    public static readonly string[] LibraryNames = ["libhiprtc.so.7", "libhiprtc.so.6", "libhiprtc.so", "hiprtc0607.dll", "hiprtc0605.dll"];

    private delegate* unmanaged<int*, int*, int> _version;
    private delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private delegate* unmanaged<nint, int, byte**, int> _compileProgram;
    private delegate* unmanaged<nint*, int> _destroyProgram;
    private delegate* unmanaged<nint, nuint*, int> _getLogSize;
    private delegate* unmanaged<nint, byte*, int> _getLog;
    private delegate* unmanaged<nint, nuint*, int> _getCodeSize;
    private delegate* unmanaged<nint, byte*, int> _getCode;

    private Hiprtc() { }

    /// <summary>Which library file was loaded.</summary>
    public string LibraryName { get; private set; } = "";

    /// <summary>hiprtc version as "major.minor".</summary>
    public string Version { get; private set; } = "";

    /// <summary>
    /// Loads hiprtc from its own library (usual names, then <paramref name="extraFolders"/>), else from
    /// <paramref name="runtimeHandle"/> (the HIP runtime, ROCm 5) when given; null with the reason when neither has it.
    /// </summary>
    public static Hiprtc? TryLoad(IEnumerable<string> extraFolders, nint runtimeHandle, string runtimeName, out string? failure)
    {
        var (handle, loaded) = NativeLibraryLoader.TryLoadFirst(LibraryNames, extraFolders);
        if (handle == 0 && runtimeHandle != 0 && NativeLibrary.TryGetExport(runtimeHandle, "hiprtcCompileProgram", out _))
            (handle, loaded) = (runtimeHandle, runtimeName);
        if (handle == 0)
        {
            failure = $"hiprtc not found (libhiprtc.so.7 / .so.6 absent, and {(runtimeHandle != 0 ? runtimeName : "the HIP runtime")} does not export it: install ROCm's hiprtc)";
            return null;
        }
        var h = new Hiprtc { LibraryName = loaded };
        var s = new NativeSymbols(handle);
        h._version = (delegate* unmanaged<int*, int*, int>)s.Required("hiprtcVersion");
        h._createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)s.Required("hiprtcCreateProgram");
        h._compileProgram = (delegate* unmanaged<nint, int, byte**, int>)s.Required("hiprtcCompileProgram");
        h._destroyProgram = (delegate* unmanaged<nint*, int>)s.Required("hiprtcDestroyProgram");
        h._getLogSize = (delegate* unmanaged<nint, nuint*, int>)s.Required("hiprtcGetProgramLogSize");
        h._getLog = (delegate* unmanaged<nint, byte*, int>)s.Required("hiprtcGetProgramLog");
        h._getCodeSize = (delegate* unmanaged<nint, nuint*, int>)s.Required("hiprtcGetCodeSize");
        h._getCode = (delegate* unmanaged<nint, byte*, int>)s.Required("hiprtcGetCode");
        if (s.Missing is { } missing)
        {
            failure = $"{loaded} {missing}";
            return null;
        }
        int major, minor;
        h._version(&major, &minor);
        h.Version = $"{major}.{minor}";
        failure = null;
        return h;
    }

    /// <summary>Options hiprtc gets for <paramref name="archName"/> (the device's gcnArchName, features included).</summary>
    public static IReadOnlyList<string> Options(string archName) => [$"--offload-arch={archName}", "-O3", "-std=c++17"];

    /// <summary>Compiles <paramref name="source"/> for <paramref name="archName"/>; returns the code object and the compiler's log. Throws <see cref="KernelCompileException"/> with the log.</summary>
    public (byte[] Image, string Log) Compile(string source, string programName, string archName)
    {
        byte[] src = NulTerminated(source), name = NulTerminated(programName);
        byte[][] opts = Options(archName).Select(NulTerminated).ToArray();
        var handles = opts.Select(o => GCHandle.Alloc(o, GCHandleType.Pinned)).ToArray();
        nint program = 0;
        try
        {
            byte** optPtrs = stackalloc byte*[opts.Length];
            for (int i = 0; i < opts.Length; i++) optPtrs[i] = (byte*)handles[i].AddrOfPinnedObject();
            fixed (byte* s = src, n = name)
            {
                int r = _createProgram(&program, s, n, 0, null, null);
                if (r != 0) throw new KernelCompileException($"hiprtcCreateProgram returned {r}");
            }
            int compiled = _compileProgram(program, opts.Length, optPtrs);
            string log = Log(program);
            if (compiled != 0)
                throw new KernelCompileException($"hiprtc {Version} could not compile {programName} for {archName} (hiprtcResult {compiled}):\n{(string.IsNullOrWhiteSpace(log) ? "(no log)" : log.Trim())}");
            nuint size;
            int got = _getCodeSize(program, &size);
            if (got != 0 || size == 0) throw new KernelCompileException($"hiprtcGetCodeSize returned {got} ({size} B)");
            var image = new byte[(int)size];
            fixed (byte* p = image) got = _getCode(program, p);
            if (got != 0) throw new KernelCompileException($"hiprtcGetCode returned {got}");
            return (image, log);
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

/// <summary>hiprtc bound to one device's arch, for <see cref="GpuRuntime.LoadKernels"/>.</summary>
internal sealed class HiprtcKernelCompiler(Hiprtc hiprtc, string archName) : IGpuKernelCompiler
{
    public string LibraryName => hiprtc.LibraryName;

    public string Version => hiprtc.Version;

    public IReadOnlyList<string> ImageExtensions { get; } = ["hsaco"];

    public (byte[] Image, string Extension) Compile(string source, string programName) => (hiprtc.Compile(source, programName, archName).Image, "hsaco");
}
