// A CPU stand-in for the GPU device runtime, so that kernels.cu's kernels (the HIP dialect: PE_HIP, 32-lane warps) run on
// the host for correctness checks where no GPU is at hand (docs/gpu-kernels.md#kernels-on-the-cpu). Force-included before
// the translation unit KernelSource assembles (g++ -include gpu_emulator.h).
//
// A launch runs the grid's blocks one after another; a block's threads are coroutines (ucontext) on one OS thread, switched
// only where the kernel synchronizes: __syncthreads waits for every live thread of the block, and a shuffle for every live
// lane of the warp (each lane posts its value in a double-buffered slot, then reads its partner's). So shared memory can be
// a static (one block at a time), atomics are plain operations, and a barrier that some thread never reaches is reported
// as a deadlock instead of hanging. Only timing is not emulated: warps do not run concurrently with each other.
#pragma once
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <csetjmp>
#include <functional>
#include <memory>
#include <ucontext.h>
#include <vector>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict
#define __align__(n) alignas(n)

struct EmuDim { unsigned x = 1, y = 1, z = 1; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace emu
{
struct Thread
{
    ucontext_t context; // the first start only
    jmp_buf resume;     // where it waits (_setjmp/_longjmp switch without the signal-mask system calls of swapcontext)
    bool started = false;
    EmuDim tid;
    int flat = 0;
    bool done = false;
    int waiting = 0; // 0 running, 1 block barrier, 2 warp barrier
    unsigned shuffles = 0;
};

struct Block
{
    std::vector<Thread> threads;
    ucontext_t start;
    jmp_buf scheduler;
    Thread* current = nullptr;
    std::function<void()> body;
    unsigned long long slots[2][1024];
};

inline Block*& block() { static Block* b = nullptr; return b; }

// The threads' stacks, allocated once for the largest block and reused by every block (not cleared: a coroutine's stack is
// as uninitialized as a GPU thread's registers).
const size_t StackBytes = 1 << 17;
inline char* stack(unsigned i)
{
    static std::vector<std::unique_ptr<char[]>> stacks;
    while (stacks.size() <= i) stacks.emplace_back(new char[StackBytes]);
    return stacks[i].get();
}
inline EmuDim& block_idx() { static EmuDim d; return d; }
inline EmuDim& block_dim() { static EmuDim d; return d; }
inline EmuDim& grid_dim() { static EmuDim d; return d; }

[[noreturn]] inline void fail(const char* what)
{
    std::fprintf(stderr, "gpu emulator: %s (block %u,%u)\n", what, block_idx().x, block_idx().y);
    std::exit(3);
}

inline void wait_at(int kind)
{
    Block* b = block();
    b->current->waiting = kind;
    if (!_setjmp(b->current->resume)) _longjmp(b->scheduler, 1);
}

inline void entry()
{
    block()->body();
    block()->current->done = true;
    _longjmp(block()->scheduler, 1);
}

// Runs body as every thread of one block; returns when all have returned.
inline void run_block(const std::function<void()>& body)
{
    Block b;
    b.body = body;
    unsigned n = block_dim().x * block_dim().y * block_dim().z;
    if (n == 0 || n > 1024 || n % 32 != 0) fail("a block must be 32 to 1024 threads in whole warps");
    b.threads.resize(n);
    block() = &b;
    for (unsigned i = 0; i < n; i++)
    {
        Thread& t = b.threads[i];
        t.flat = (int)i;
        t.tid = {i % block_dim().x, (i / block_dim().x) % block_dim().y, i / (block_dim().x * block_dim().y)};
        getcontext(&t.context);
        t.context.uc_stack.ss_sp = stack(i);
        t.context.uc_stack.ss_size = StackBytes;
        t.context.uc_link = nullptr;
        makecontext(&t.context, entry, 0);
    }
    for (;;)
    {
        bool ran = false;
        for (Thread& t : b.threads)
        {
            if (t.done || t.waiting) continue;
            b.current = &t;
            if (!_setjmp(b.scheduler))
            {
                if (t.started) _longjmp(t.resume, 1);
                t.started = true;
                swapcontext(&b.start, &t.context);
            }
            ran = true;
        }
        // Release a warp whose live lanes all wait at a shuffle, then a block whose live threads all wait at __syncthreads.
        bool released = false, live = false, allAtBlock = true;
        for (unsigned w = 0; w < n / 32; w++)
        {
            bool any = false, all = true;
            for (unsigned l = 0; l < 32; l++)
            {
                Thread& t = b.threads[w * 32 + l];
                if (t.done) continue;
                any = true;
                if (t.waiting != 2) all = false;
            }
            if (any && all)
            {
                for (unsigned l = 0; l < 32; l++) if (!b.threads[w * 32 + l].done) b.threads[w * 32 + l].waiting = 0;
                released = true;
            }
        }
        for (Thread& t : b.threads)
        {
            if (t.done) continue;
            live = true;
            if (t.waiting != 1) allAtBlock = false;
        }
        if (!live) break;
        if (allAtBlock)
        {
            for (Thread& t : b.threads) if (!t.done) t.waiting = 0;
            released = true;
        }
        if (!ran && !released) fail("deadlock: threads wait at barriers that the others never reach");
    }
    block() = nullptr;
}

// Runs kernel over grid x block, blocks in order (x fastest).
template <typename F>
inline void launch(EmuDim grid, EmuDim threads, F kernel)
{
    grid_dim() = grid;
    block_dim() = threads;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++)
            {
                block_idx() = {x, y, z};
                run_block(kernel);
            }
}

template <typename T>
inline T exchange(T v, int source_of_lane_xor_or_index, bool isXor, int width)
{
    static_assert(sizeof(T) <= 8, "a shuffled value fits 8 bytes");
    Block* b = block();
    Thread* me = b->current;
    unsigned buffer = me->shuffles++ & 1, lane = (unsigned)me->flat & 31, warpBase = (unsigned)me->flat & ~31u;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    b->slots[buffer][me->flat] = bits;
    wait_at(2);
    int groupBase = (int)(lane & ~(unsigned)(width - 1));
    int src = isXor ? (int)(lane ^ (unsigned)source_of_lane_xor_or_index) : groupBase + (source_of_lane_xor_or_index & (width - 1));
    if (src < groupBase || src >= groupBase + width) src = (int)lane;
    T out;
    std::memcpy(&out, &b->slots[buffer][warpBase + (unsigned)src], sizeof(T));
    return out;
}
} // namespace emu

#define threadIdx (emu::block()->current->tid)
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())

inline void __syncthreads() { emu::wait_at(1); }
inline void __threadfence() {}
template <typename T> inline T __shfl_xor(T v, int o, int width = 32) { return emu::exchange(v, o, true, width); }
template <typename T> inline T __shfl(T v, int src, int width = 32) { return emu::exchange(v, src, false, width); }
template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline int __float2int_rn(float f) { return (int)std::nearbyint(f); }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) { unsigned long long v = ((unsigned long long)hi << 32) | lo; return (unsigned)(v >> (s & 31)); }
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned s) { unsigned long long v = ((unsigned long long)hi << 32) | lo; return (unsigned)(v >> (s > 32 ? 32 : s)); }
// Result byte n is byte (s >> 4n) & 7 of the 8 bytes y:x (x the low four), as CUDA's __byte_perm.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int n = 0; n < 4; n++) r |= (unsigned)((v >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
}
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
