using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Gpu;

/// <summary>One quantized weight matrix of a prompt GEMM, dequantized to F16 [Rows, Cols] before the vendor BLAS reads it.</summary>
internal readonly record struct F16Weight(ulong Weight, int Slot, long RowBytes, long Rows, int Cols)
{
    public long Bytes => Rows * Cols * 2;
}

// The F16 weights of the prompt path's cuBLAS GEMMs (docs/gpu-kernels.md#prompt-gemm-inputs). A GEMM takes a unit: one matrix,
// or the matrices of one strided batched GEMM, dequantized side by side.
//
// gemm_prefetch off: each unit is dequantized on the queue's stream into one scratch, right before its GEMM.
//
// gemm_prefetch on: a prompt runs the same units in the same order every step (layer by layer: q/k/v, output, gate/up, down),
// so the queue remembers which unit followed which, and while one unit's GEMM runs it dequantizes the next one's on a second
// stream into the other of two buffers. The dequantization (memory-bound) then overlaps the GEMM (tensor cores), and the SMs a
// GEMM's last wave leaves idle do it. Two events per buffer order the streams: "ready" (recorded on the second stream after
// the unit's dequantization; the GEMM's stream waits for it) and "free" (recorded on the GEMM's stream after the GEMM that
// read the buffer; the next dequantization into it waits for it). A unit that is not the one expected is dequantized
// in line, as with the option off, into the buffer the second stream is not writing. Synchronize waits for both streams,
// so no dequantization outlives a step.
internal sealed unsafe partial class GpuComputeQueue
{
    private ulong _weightsF16;      // gemm_prefetch off: the one F16 weight scratch
    private long _weightsF16Capacity;
    private readonly ulong[] _aheadBuffers = new ulong[2];
    private readonly long[] _aheadCapacity = new long[2];
    private readonly nint[] _aheadReady = new nint[2], _aheadFree = new nint[2];
    private nint _aheadStream; // 0 until the first unit with gemm_prefetch on
    private readonly Dictionary<ulong, F16Weight[]> _aheadNext = []; // a unit's first weight → the unit that came after it last time
    private F16Weight[]? _aheadPending; // the unit being dequantized on the second stream, into _aheadBuffers[_aheadPendingBuffer]
    private int _aheadPendingBuffer;
    private ulong _aheadPrevious;       // the first weight of the last unit a GEMM read
    private int _aheadLastBuffer;

    /// <summary>
    /// The F16 copy of <paramref name="unit"/> (its matrices back to back), dequantized or being dequantized in stream order
    /// before the next GEMM; pass <paramref name="buffer"/> to <see cref="F16WeightsRead"/> once that GEMM is queued.
    /// </summary>
    private ulong F16Weights(ReadOnlySpan<F16Weight> unit, out int buffer)
    {
        long bytes = UnitBytes(unit);
        if (!_options.GemmPrefetch)
        {
            EnsureScratch(ref _weightsF16, ref _weightsF16Capacity, bytes, "F16 weights");
            Dequantize(unit, _weightsF16, _stream, "dequantize_f16");
            buffer = -1;
            return _weightsF16;
        }
        if (_aheadStream == 0) CreateAheadStream();
        if (_aheadPending is { } pending && SameUnit(pending, unit))
        {
            buffer = _aheadPendingBuffer;
            _d.StreamWaitEvent(_stream, _aheadReady[buffer]);
        }
        else
        {
            // In line, into the buffer the second stream is not writing (the GEMMs that read it before are on this stream).
            buffer = _aheadPending is null ? 1 - _aheadLastBuffer : 1 - _aheadPendingBuffer;
            EnsureAheadBuffer(buffer, bytes);
            Dequantize(unit, _aheadBuffers[buffer], _stream, "dequantize_f16");
        }
        _aheadPending = null;
        if (_aheadPrevious != 0 && (!_aheadNext.TryGetValue(_aheadPrevious, out var known) || !SameUnit(known, unit)))
            _aheadNext[_aheadPrevious] = unit.ToArray(); // allocates only while learning the order
        _aheadPrevious = unit[0].Weight;
        _aheadLastBuffer = buffer;
        if (_aheadNext.TryGetValue(unit[0].Weight, out var next))
        {
            int other = 1 - buffer;
            EnsureAheadBuffer(other, UnitBytes(next));
            _d.StreamWaitEvent(_aheadStream, _aheadFree[other]); // the GEMM that read it last is done
            Dequantize(next, _aheadBuffers[other], _aheadStream, "dequantize_f16 (ahead)");
            _d.RecordEvent(_aheadReady[other], _aheadStream);
            (_aheadPending, _aheadPendingBuffer) = (next, other);
        }
        return _aheadBuffers[buffer];
    }

    /// <summary>After the GEMM that reads <paramref name="buffer"/> (from <see cref="F16Weights"/>) is queued: marks when it is free again.</summary>
    private void F16WeightsRead(int buffer)
    {
        if (buffer >= 0) _d.RecordEvent(_aheadFree[buffer], _stream);
    }

    private void Dequantize(ReadOnlySpan<F16Weight> unit, ulong destination, nint stream, string what)
    {
        ulong a = destination, pw = 0;
        long rowBytes = 0, rows = 0;
        int cols = 0;
        void** args = stackalloc void*[] { &pw, &rowBytes, &rows, &cols, &a };
        foreach (var w in unit)
        {
            (pw, rowBytes, rows, cols) = (w.Weight, w.RowBytes, w.Rows, w.Cols);
            if (stream == _stream) LaunchKernel(_dequantizeF16[w.Slot], LaunchGeometry.Dequantize(rows, cols), args, what);
            else
            {
                var events = _profile?.Begin(stream);
                _d.Launch(_dequantizeF16[w.Slot], LaunchGeometry.Dequantize(rows, cols), stream, args, programmatic: false, what);
                if (events is { } e) _profile!.End(what, e, stream);
            }
            a += (ulong)w.Bytes;
        }
    }

    private void CreateAheadStream()
    {
        _aheadStream = _d.CreateStream();
        for (int b = 0; b < 2; b++) (_aheadReady[b], _aheadFree[b]) = (_d.CreateEvent(), _d.CreateEvent());
    }

    /// <summary>Grows buffer <paramref name="b"/> with both streams idle (a few times while the first prompt runs).</summary>
    private void EnsureAheadBuffer(int b, long bytes)
    {
        if (_aheadCapacity[b] >= bytes) return;
        if (_aheadBuffers[b] != 0)
        {
            Synchronize();
            _d.Free(_aheadBuffers[b], "F16 weights scratch");
            (_aheadBuffers[b], _aheadCapacity[b]) = (0, 0);
        }
        long size = TensorPadding.AlignUp(bytes, 1 << 20);
        _aheadBuffers[b] = _d.Allocate(size, "F16 weights scratch");
        _aheadCapacity[b] = size;
    }

    private void SynchronizeAhead()
    {
        if (_aheadStream != 0) _d.SynchronizeStream(_aheadStream);
    }

    private void DisposePromptWeights()
    {
        if (_weightsF16 != 0) _d.FreeQuietly(_weightsF16);
        if (_aheadStream == 0) return;
        _d.DestroyStreamQuietly(_aheadStream);
        foreach (ulong b in _aheadBuffers) if (b != 0) _d.FreeQuietly(b);
        foreach (nint e in _aheadReady) _d.DestroyEvent(e);
        foreach (nint e in _aheadFree) _d.DestroyEvent(e);
    }

    private static long UnitBytes(ReadOnlySpan<F16Weight> unit)
    {
        long bytes = 0;
        foreach (var w in unit) bytes += w.Bytes;
        return bytes;
    }

    private static bool SameUnit(ReadOnlySpan<F16Weight> a, ReadOnlySpan<F16Weight> b) => a.SequenceEqual(b);
}
