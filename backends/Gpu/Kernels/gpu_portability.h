// PluginEngine GPU portability header: what kernels.cu needs that CUDA (NVRTC) and HIP (hiprtc) spell differently.
// The host prepends it to kernels.cu with one of PE_CUDA / PE_HIP defined and PE_DEVICE_WARP set to the device's
// warp (CUDA: 32; HIP: 64 on gfx9/CDNA, 32 on RDNA). No include directives: both compilers build the unit alone
// (hiprtc pre-includes its own device runtime; NVRTC needs nothing for what is used here).
//
// The kernels work in "lanes" of a 32-wide group (LANES below): ROW_CHUNK = 32 lanes x 16 elements is the unit the
// matmul kernels read rows in, and the loader's slide rule depends on it, so it is the same on every device. On a
// wave64 device two such groups share one hardware wavefront; every cross-lane operation goes through lane_xor, whose
// width of 32 keeps each group to itself, and block sizes are multiples of 64 (LaunchGeometry), so no wavefront is
// partly filled. On warp-32 hardware (NVIDIA, RDNA) a group is the whole warp, as before.

#if defined(PE_CUDA) == defined(PE_HIP)
#error "exactly one of PE_CUDA and PE_HIP must be defined by the host"
#endif
#ifndef PE_DEVICE_WARP
#error "PE_DEVICE_WARP (the device's warp size) must be defined by the host"
#endif
#if PE_DEVICE_WARP != 32 && PE_DEVICE_WARP != 64
#error "PE_DEVICE_WARP must be 32 or 64"
#endif

#define LANES 32

// Two kinds of choice, kept apart:
//  - the runtime API (PE_CUDA / PE_HIP): how lanes exchange values, whether programmatic launch exists;
//  - the compiler and instruction set (NVRTC emitting PTX: __CUDACC_RTC__ / __CUDA_ARCH__; clang emitting AMDGPU code):
//    half conversions and the int8 dot product.
// They coincide for the two real targets. They differ only in the HIP-on-CUDA test shim (scripts/hip-shim), where NVRTC
// compiles the HIP dialect: HIP's shuffle API (mapped by the shim), NVIDIA's instructions.

// --- Lane exchange (runtime API) --------------------------------------------------------------------------------------
#if defined(PE_CUDA)
#if PE_DEVICE_WARP != 32
#error "CUDA warps are 32 wide"
#endif
// Butterfly exchange within the 32-lane group (the whole warp on NVIDIA).
#define lane_xor(v, o) __shfl_xor_sync(0xffffffffu, (v), (o))
#else
// Butterfly exchange within the 32-lane group: HIP's shuffle takes the group width (at most the wavefront's).
#define lane_xor(v, o) __shfl_xor((v), (o), LANES)
#endif

// --- Loads of data other blocks wrote in the same launch (runtime API) ------------------------------------------------
// The split attention's combining block reads the partials of its head's other blocks: past the non-coherent L1.
#if defined(PE_CUDA)
__device__ __forceinline__ float load_cg(const float* p) { return __ldcg(p); }
#else
// A volatile load is a coherent (glc) load on AMD GPUs, and an uncached one under the shim's NVRTC.
__device__ __forceinline__ float load_cg(const float* p) { return *(const volatile float*)p; }
#endif

// --- Programmatic dependent launch (runtime API) ----------------------------------------------------------------------
// CUDA sm_90+, when the host launches with the programmatic-serialization attribute: a kernel may be scheduled before the
// previous kernel of its stream has completed: once all of that kernel's blocks have exited, or earlier where they trigger
// (PDL_TRIGGER, griddepcontrol.launch_dependents). Only the small kernels that a decode mat-vec follows trigger, at entry
// (PDL_SMALL_ENTRY in kernels.cu, docs/gpu-kernels.md#decode-prefetch); a trigger at every kernel's entry was measured
// slower (405 against 433 t/s for the 7B shape on an H200), its waiting blocks taking SM slots from the running kernel.
// Every kernel therefore starts by waiting for its predecessor's completion and memory (griddepcontrol.wait: a no-op when
// launched normally). Before sm_90, and on HIP (kernels of a stream run in order), both are omitted.
#if defined(PE_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_ENTRY() asm volatile("griddepcontrol.wait;" ::: "memory")
#define PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define PDL_ENTRY() do { } while (0)
#define PDL_TRIGGER() do { } while (0)
#endif

// --- Half conversions (compiler) ---------------------------------------------------------------------------------------
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// No headers under NVRTC: inline PTX.
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#else
// clang's _Float16 (round to nearest even, as cvt.rn).
__device__ __forceinline__ float h2f(unsigned short h) { return (float)__builtin_bit_cast(_Float16, h); }
__device__ __forceinline__ unsigned short f2h(float f) { return __builtin_bit_cast(unsigned short, (_Float16)f); }
#endif

// --- Int8 dot product: c + the sum of four signed 8-bit products (instruction set) ------------------------------------
#if defined(__CUDA_ARCH__)
// NVIDIA: dp4a (sm_61 and later).
__device__ __forceinline__ int dp4a(int a, int b, int c)
{
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
#elif defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || \
      defined(__gfx942__) || defined(__gfx950__) || defined(__gfx1011__) || defined(__gfx1012__) || defined(__gfx1030__) || \
      defined(__gfx1031__) || defined(__gfx1032__) || defined(__gfx1033__) || defined(__gfx1034__) || defined(__gfx1035__) || \
      defined(__gfx1036__)
// AMD targets with v_dot4_i32_i8 (dot1-insts).
__device__ __forceinline__ int dp4a(int a, int b, int c) { return __builtin_amdgcn_sdot4(a, b, c, false); }
#elif (defined(__GFX11__) || defined(__GFX12__)) && __has_builtin(__builtin_amdgcn_sudot4)
// RDNA 3/4 (gfx11xx incl. gfx1151, gfx12xx): v_dot4_i32_iu8 with both operands signed.
__device__ __forceinline__ int dp4a(int a, int b, int c) { return __builtin_amdgcn_sudot4(true, a, true, b, c, false); }
#else
// Portable fallback (e.g. gfx900, gfx1010): four byte products.
__device__ __forceinline__ int dp4a(int a, int b, int c)
{
    return c + (int)(signed char)(a & 0xFF) * (int)(signed char)(b & 0xFF)
             + (int)(signed char)((a >> 8) & 0xFF) * (int)(signed char)((b >> 8) & 0xFF)
             + (int)(signed char)((a >> 16) & 0xFF) * (int)(signed char)((b >> 16) & 0xFF)
             + (a >> 24) * (b >> 24);
}
#endif
