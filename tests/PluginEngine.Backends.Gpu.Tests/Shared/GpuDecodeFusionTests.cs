using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// Which kernels the GPU queue launches for the fused decode ops, and with what arguments, over a recording native layer (no
/// GPU): the q/k/v mat-vec that rotates and stores in its epilogue (<c>qkv_rope</c>; docs/gpu-kernels.md#decode-launches) with
/// its RopeStore argument, and the fused mat-vecs on F16 weights (<c>plain_fusion</c>; docs/gpu-kernels.md#f16-decode), against
/// the launches each option's <c>off</c> keeps. What the kernels compute is the conformance kit's (FusedOps), on a GPU.
/// </summary>
public sealed unsafe class GpuDecodeFusionTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-fusion-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    private const int Heads = 4, KvHeads = 2, HeadSize = 64, Cols = 256, Position = 17, Qd = Heads * HeadSize, Kvd = KvHeads * HeadSize;

    private sealed record Recorded(string Kernel, Launch Launch, MatVecTargets? Targets, ulong Xq, RopeStore? Epilogue, ulong SwiGluYq);

    /// <summary>A queue with these options, its buffers, and the kernels it launches from the moment the returned list is made.</summary>
    private (IComputeQueue Queue, BackendBuffer Buffer, List<Recorded> Launches) Setup(bool qkvRope, bool plainFusion)
    {
        var (device, native) = RecordingGpuNative.Device("gpu", [], peers: false, 0x1000_0000, _cache,
                                                         GpuKernelOptions.Default with { BlasPrompt = false, QkvRope = qkvRope, PlainFusion = plainFusion });
        var launches = new List<Recorded>();
        native.OnLaunch = (kernel, launch, args) =>
        {
            bool matVec = kernel.StartsWith("matvec_", StringComparison.Ordinal);
            launches.Add(new Recorded(kernel, launch, matVec ? *(MatVecTargets*)args[0] : null, matVec ? *(ulong*)args[2] : 0,
                                      kernel.StartsWith("matvec_rope_", StringComparison.Ordinal) ? *(RopeStore*)args[4] : null,
                                      kernel.StartsWith("swiglu_", StringComparison.Ordinal) ? *(ulong*)args[8] : ulong.MaxValue));
        };
        return (device.CreateQueue()!, device.Buffers.AllocateOwned("everything", 64 << 20), launches);
    }

    /// <summary>Tensors of the attention block's input side at fixed offsets of one buffer.</summary>
    private sealed record Block(DeviceTensor X, MatMulTarget Q, MatMulTarget K, MatMulTarget V, DeviceTensor KCache, DeviceTensor VCache)
    {
        public static Block In(BackendBuffer b, GgmlType q, GgmlType k, GgmlType v) => new(
            new DeviceTensor(b, 0, GgmlType.F32),
            new MatMulTarget(new DeviceTensor(b, 1 << 20, q), Qd, new DeviceTensor(b, 8 << 20, GgmlType.F32)),
            new MatMulTarget(new DeviceTensor(b, 2 << 20, k), Kvd, new DeviceTensor(b, 9 << 20, GgmlType.F32)),
            new MatMulTarget(new DeviceTensor(b, 3 << 20, v), Kvd, new DeviceTensor(b, 10 << 20, GgmlType.F32)),
            new DeviceTensor(b, 16 << 20, GgmlType.F16), new DeviceTensor(b, 20 << 20, GgmlType.F16));

        public void Run(IComputeQueue queue, RopeMode mode = RopeMode.Normal, int tokens = 1)
            => queue.MatMulRopeAndStoreKv(X, Cols, Q, K, V, KCache, VCache, new AttentionParams(tokens, Position, Heads, KvHeads, HeadSize, 0.125f),
                                          new RopeParams(mode, HeadSize, 10000f, 1f), null);
    }

    private static ulong Address(DeviceTensor t) => ((GpuBuffer)t.Buffer).DevicePointer + (ulong)t.Offset;

    [Fact]
    public void Q4_0_qkv_is_one_launch_that_rotates_q_and_k_and_stores_k_and_v_at_the_tokens_cache_row()
    {
        var (queue, buffer, launches) = Setup(qkvRope: true, plainFusion: false);
        var block = Block.In(buffer, GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q4_0);
        block.Run(queue);

        Assert.Equal(["quantize_x_q8", "matvec_rope_q8_q4_0"], launches.Select(l => l.Kernel));
        var rope = launches[1];
        var targets = rope.Targets!.Value;
        Assert.Equal(3, targets.Count);
        Assert.Equal([Qd, Kvd, Kvd], Enumerable.Range(0, 3).Select(i => targets.Rows(i)));
        Assert.Equal([Address(block.Q.Output), Address(block.K.Output), Address(block.V.Output)], Enumerable.Range(0, 3).Select(i => targets.Output(i)));
        Assert.Equal(LaunchGeometry.MatVecQ8(Qd + 2 * Kvd, 1), rope.Launch);
        Assert.NotEqual(Address(block.X), rope.Xq); // the 8-bit row quantize_x_q8 made
        var e = rope.Epilogue!.Value;
        Assert.Equal(RopeStore.Role(0, RopeStore.Rotate) | RopeStore.Role(1, RopeStore.RotateStoreK) | RopeStore.Role(2, RopeStore.StoreV), e.Roles);
        Assert.Equal(Address(block.KCache) + Position * Kvd * 2UL, e.KCache); // F16 rows of Kvd elements
        Assert.Equal(Address(block.VCache) + Position * Kvd * 2UL, e.VCache);
        Assert.Equal((1, Position, HeadSize, HeadSize, 0UL), (e.F16, e.Position, e.HeadSize, e.Dims, e.Factors));
        Assert.Equal(56, sizeof(RopeStore)); // kernels.cu's struct RopeStore
    }

    [Fact]
    public void Q4_K_M_qkv_takes_a_launch_per_type_each_with_its_targets_roles()
    {
        var (queue, buffer, launches) = Setup(qkvRope: true, plainFusion: false);
        Block.In(buffer, GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K).Run(queue);

        Assert.Equal(["quantize_x_q8", "matvec_rope_q8_q4_k", "matvec_rope_q8_q6_k"], launches.Select(l => l.Kernel));
        Assert.Equal(RopeStore.Role(0, RopeStore.Rotate) | RopeStore.Role(1, RopeStore.RotateStoreK), launches[1].Epilogue!.Value.Roles);
        Assert.Equal(2, launches[1].Targets!.Value.Count);
        Assert.Equal(RopeStore.Role(0, RopeStore.StoreV), launches[2].Epilogue!.Value.Roles);
        Assert.Equal(launches[1].Xq, launches[2].Xq); // x quantized once for both
    }

    [Theory]
    [InlineData(false, RopeMode.Normal, 1)] // qkv_rope off
    [InlineData(true, RopeMode.NeoX, 1)]    // pairs (i, i + d/2) are not in one block
    [InlineData(true, RopeMode.Normal, 3)]  // not a decode step
    public void Otherwise_the_projections_then_rope_store_kv(bool qkvRope, RopeMode mode, int tokens)
    {
        var (queue, buffer, launches) = Setup(qkvRope, plainFusion: false);
        Block.In(buffer, GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q4_0).Run(queue, mode, tokens);

        Assert.DoesNotContain(launches, l => l.Kernel.StartsWith("matvec_rope_", StringComparison.Ordinal));
        Assert.Equal("rope_store_kv", launches[^1].Kernel);
        // One token: the three targets in one mat-vec; three tokens: a small-batch matmul per target.
        Assert.Equal(tokens == 1 ? 1 : 3, launches.Count(l => l.Kernel == (tokens == 1 ? "matvec_q8_q4_0" : "matmul_q8_q4_0")));
    }

    [Fact]
    public void F16_weights_with_plain_fusion_take_the_fused_mat_vecs_on_the_f32_row()
    {
        var (queue, buffer, launches) = Setup(qkvRope: true, plainFusion: true);
        var block = Block.In(buffer, GgmlType.F16, GgmlType.F16, GgmlType.F16);
        block.Run(queue);
        var y = new DeviceTensor(buffer, 12 << 20, GgmlType.F32);
        queue.MatMulAdd(block.Q.Weight, Qd, Cols, block.X, y, 1, new DeviceTensor(buffer, 13 << 20, GgmlType.F32));
        queue.MatMulSwiGlu(block.K.Weight, block.V.Weight, Kvd, Cols, block.X, y, new DeviceTensor(buffer, 13 << 20, GgmlType.F32), 1);

        Assert.Equal(["matvec_rope_f16", "matvec_f16", "swiglu_f16"], launches.Select(l => l.Kernel)); // nothing quantized, no add
        Assert.Equal(Address(block.X), launches[0].Xq);
        Assert.Equal(Address(block.X), launches[1].Xq);
        Assert.Equal(1, launches[1].Targets!.Value.Accumulate);
        Assert.Equal(0UL, launches[2].SwiGluYq); // the down projection reads F32: no 8-bit output
    }

    [Fact]
    public void F16_weights_without_plain_fusion_keep_one_launch_per_weight()
    {
        var (queue, buffer, launches) = Setup(qkvRope: true, plainFusion: false);
        var block = Block.In(buffer, GgmlType.F16, GgmlType.F16, GgmlType.F16);
        block.Run(queue);
        queue.MatMulAdd(block.Q.Weight, Qd, Cols, block.X, new DeviceTensor(buffer, 12 << 20, GgmlType.F32), 1, new DeviceTensor(buffer, 13 << 20, GgmlType.F32));

        Assert.Equal(["matmul_f16_t1", "matmul_f16_t1", "matmul_f16_t1", "rope_store_kv", "matmul_f16_t1", "add"], launches.Select(l => l.Kernel));
    }
}
