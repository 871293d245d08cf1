// HIP-on-CUDA test shim, compiler part: a stand-in for libhiprtc.so.6 that forwards the hiprtc calls the PluginEngine HIP
// plugin makes (backends/Hip/Native/Hiprtc.cs) to NVRTC. The plugin hands it the HIP dialect of the one kernel source
// (PE_HIP, warp 32); the shim adds a two-line prelude mapping HIP's width-taking shuffle onto CUDA's, turns
// --offload-arch=sm_XY into --gpu-architecture=sm_XY and returns the CUBIN as the "code object".
// See docs/hip.md#the-hip-on-cuda-shim.
// Build: gcc -shared -fPIC -O2 -o libhiprtc.so.6 hip_on_cuda_rtc.c -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void* nvrtc;
static int (*p_nvrtcVersion)(int*, int*);
static int (*p_nvrtcCreateProgram)(void**, const char*, const char*, int, const char* const*, const char* const*);
static int (*p_nvrtcCompileProgram)(void*, int, const char* const*);
static int (*p_nvrtcDestroyProgram)(void**);
static int (*p_nvrtcGetProgramLogSize)(void*, size_t*);
static int (*p_nvrtcGetProgramLog)(void*, char*);
static int (*p_nvrtcGetCUBINSize)(void*, size_t*);
static int (*p_nvrtcGetCUBIN)(void*, char*);

static const char* const prelude =
    "// hip-on-cuda shim prelude: HIP's shuffle (value, lane mask, width) on CUDA's\n"
    "#define __shfl_xor(v, o, w) __shfl_xor_sync(0xffffffffu, (v), (o), (w))\n";

static int bind(void)
{
    if (nvrtc) return 1;
    const char* names[] = { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                            "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so", "libnvrtc.so.11.2", 0 };
    void* h = 0;
    for (int i = 0; names[i] && !h; i++) h = dlopen(names[i], RTLD_NOW);
    if (!h) { fprintf(stderr, "hip-on-cuda shim: no NVRTC found\n"); return 0; }
#define BIND(name) if (!(*(void**)&p_##name = dlsym(h, #name))) { fprintf(stderr, "hip-on-cuda shim: NVRTC lacks %s\n", #name); return 0; }
    BIND(nvrtcVersion) BIND(nvrtcCreateProgram) BIND(nvrtcCompileProgram) BIND(nvrtcDestroyProgram) BIND(nvrtcGetProgramLogSize)
    BIND(nvrtcGetProgramLog) BIND(nvrtcGetCUBINSize) BIND(nvrtcGetCUBIN)
#undef BIND
    nvrtc = h;
    return 1;
}

// HIPRTC_ERROR_INTERNAL_ERROR when NVRTC is missing; NVRTC's other results pass through.
#define NEED() do { if (!bind()) return 11; } while (0)

int hiprtcVersion(int* major, int* minor) { NEED(); return p_nvrtcVersion(major, minor); }

int hiprtcCreateProgram(void** prog, const char* src, const char* name, int numHeaders, const char* const* headers, const char* const* includeNames)
{
    NEED();
    size_t a = strlen(prelude), b = strlen(src);
    char* full = malloc(a + b + 1);
    if (!full) return 1;
    memcpy(full, prelude, a);
    memcpy(full + a, src, b + 1);
    int r = p_nvrtcCreateProgram(prog, full, name, numHeaders, headers, includeNames);
    free(full);
    return r;
}

int hiprtcCompileProgram(void* prog, int numOptions, const char* const* options)
{
    NEED();
    const char** mapped = calloc((size_t)numOptions + 1, sizeof(char*));
    char* arch = 0;
    int n = 0;
    for (int i = 0; i < numOptions; i++)
    {
        const char* o = options[i];
        if (strncmp(o, "--offload-arch=", 15) == 0)
        {
            const char* target = o + 15; // sm_XY (the runtime shim reports it as gcnArchName)
            arch = malloc(strlen(target) + 32);
            sprintf(arch, "--gpu-architecture=%s", target);
            mapped[n++] = arch;
        }
        else if (strcmp(o, "-std=c++17") == 0) mapped[n++] = "--std=c++17";
        // -O3 and other clang options: NVRTC optimizes by default.
    }
    int r = p_nvrtcCompileProgram(prog, n, mapped);
    free(arch);
    free(mapped);
    return r;
}

int hiprtcDestroyProgram(void** prog) { NEED(); return p_nvrtcDestroyProgram(prog); }
int hiprtcGetProgramLogSize(void* prog, size_t* n) { NEED(); return p_nvrtcGetProgramLogSize(prog, n); }
int hiprtcGetProgramLog(void* prog, char* log) { NEED(); return p_nvrtcGetProgramLog(prog, log); }
int hiprtcGetCodeSize(void* prog, size_t* n) { NEED(); return p_nvrtcGetCUBINSize(prog, n); }
int hiprtcGetCode(void* prog, char* code) { NEED(); return p_nvrtcGetCUBIN(prog, code); }
