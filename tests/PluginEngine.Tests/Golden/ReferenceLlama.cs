using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// A plain scalar llama forward pass used as the oracle for the engine's own graph. It shares nothing with
/// core/Inference or the CPU kernels: it reads the shape straight from the GGUF metadata keys, decodes every
/// matrix to float32 with core's scalar <see cref="Dequantizer"/> (itself tested against the block definitions),
/// and then does all arithmetic in double precision, one token at a time, with a double-precision KV cache.
/// Semantics follow llama.cpp's llama graph: RMSNorm (x / sqrt(mean(x²) + ε) · w), RoPE "normal" mode rotating
/// adjacent pairs (2i, 2i+1) by θ = pos · base^(-2i/d_rope) (divided by rope_freqs.weight[i] when the file has it), causal attention with grouped KV heads (query head h
/// reads KV head h / (heads / kv_heads)) scaled by 1/√head_size, a SwiGLU feed-forward (silu(gate)·up, then down),
/// and output.weight or, when it is absent, the tied token embeddings.
/// A session may keep its cache as Q8_0 or Q4_0 blocks (<see cref="CreateSession(int, GgmlType)"/>): each position's k and v,
/// rounded to float, are written as GGUF blocks by the formulas of the format (<see cref="KvBlocks"/>) and read back decoded.
/// </summary>
public sealed class ReferenceLlama
{
    private readonly float[] _tokenEmbedding, _outputNorm, _output; // [V, d], [d], [V, d] (the same array when tied)
    private readonly Layer[] _layers;
    private readonly float[]? _ropeFactors; // [d_rope/2] rope_freqs.weight, or null

    private sealed record Layer(float[] AttnNorm, float[] Q, float[] K, float[] V, float[] AttnOutput,
        float[] FfnNorm, float[] FfnGate, float[] FfnUp, float[] FfnDown);

    private ReferenceLlama(GgufFile file)
    {
        string arch = file.GetString("general.architecture");
        if (arch != "llama") throw new NotSupportedException($"{file.Path}: the reference implements the llama graph, not '{arch}'");
        EmbeddingLength = (int)file.GetUInt32("llama.embedding_length");
        BlockCount = (int)file.GetUInt32("llama.block_count");
        FeedForwardLength = (int)file.GetUInt32("llama.feed_forward_length");
        HeadCount = (int)file.GetUInt32("llama.attention.head_count");
        KvHeadCount = (int)file.GetUInt32("llama.attention.head_count_kv");
        HeadSize = EmbeddingLength / HeadCount;
        RopeDimensions = (int)file.GetUInt32OrDefault("llama.rope.dimension_count", (uint)HeadSize);
        RopeBase = file.GetFloat32OrDefault("llama.rope.freq_base", 10000f);
        Epsilon = file.GetFloat32("llama.attention.layer_norm_rms_epsilon");
        VocabularySize = checked((int)file.GetTensor("token_embd.weight").Info.Dims[1]);

        int d = EmbeddingLength, kvd = KvHeadCount * HeadSize, ff = FeedForwardLength;
        float[] Read(string name, params long[] dims) => ReadTensor(file, name, dims);
        _tokenEmbedding = Read("token_embd.weight", d, VocabularySize);
        _outputNorm = Read("output_norm.weight", d);
        IsOutputTied = file.FindTensor("output.weight") is null;
        _output = IsOutputTied ? _tokenEmbedding : Read("output.weight", d, VocabularySize);
        _ropeFactors = file.FindTensor("rope_freqs.weight") is null ? null : Read("rope_freqs.weight", RopeDimensions / 2);
        _layers = new Layer[BlockCount];
        for (int l = 0; l < BlockCount; l++)
        {
            string p = $"blk.{l}.";
            _layers[l] = new Layer(
                Read(p + "attn_norm.weight", d), Read(p + "attn_q.weight", d, d), Read(p + "attn_k.weight", d, kvd),
                Read(p + "attn_v.weight", d, kvd), Read(p + "attn_output.weight", d, d), Read(p + "ffn_norm.weight", d),
                Read(p + "ffn_gate.weight", d, ff), Read(p + "ffn_up.weight", d, ff), Read(p + "ffn_down.weight", ff, d));
        }
    }

    public int EmbeddingLength { get; }
    public int BlockCount { get; }
    public int FeedForwardLength { get; }
    public int HeadCount { get; }
    public int KvHeadCount { get; }
    public int HeadSize { get; }
    public int RopeDimensions { get; }
    public float RopeBase { get; }
    public float Epsilon { get; }
    public int VocabularySize { get; }

    /// <summary>True when the file has per-pair RoPE frequency factors (rope_freqs.weight).</summary>
    public bool HasRopeFactors => _ropeFactors is not null;

    /// <summary>True when the file has no output.weight and the logits use the token embeddings.</summary>
    public bool IsOutputTied { get; }

    /// <summary>Reads and decodes every tensor of the llama graph in <paramref name="path"/>.</summary>
    public static ReferenceLlama Load(string path) => new(GgufReader.Read(path));

    /// <summary>A fresh sequence (empty KV cache) able to hold <paramref name="capacity"/> positions.</summary>
    public Session CreateSession(int capacity) => new(this, capacity);

    /// <summary>A fresh sequence whose cache holds what a <paramref name="cacheType"/> cache holds (Q8_0 or Q4_0 blocks; F32 and F16:
    /// double precision, as <see cref="CreateSession(int)"/>).</summary>
    public Session CreateSession(int capacity, GgmlType cacheType) => new(this, capacity, cacheType);

    /// <summary>Decodes a tensor to float32, checking its GGUF dims (innermost first) against what the graph expects.</summary>
    private static float[] ReadTensor(GgufFile file, string name, long[] dims)
    {
        var tensor = file.GetTensor(name);
        if (!tensor.Info.Dims.SequenceEqual(dims))
            throw new InvalidDataException($"{file.Path}: tensor {name} has dims [{string.Join(", ", tensor.Info.Dims)}], the llama graph expects [{string.Join(", ", dims)}]");
        var bytes = new byte[tensor.ByteSize];
        using (var handle = File.OpenHandle(file.Path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            int read = RandomAccess.Read(handle, bytes, tensor.FileOffset);
            if (read != bytes.Length) throw new EndOfStreamException($"{file.Path}: tensor {name} is cut short at byte {tensor.FileOffset + read}");
        }
        var values = new float[tensor.Info.ElementCount];
        Dequantizer.Dequantize(tensor.Info.Type, bytes, values);
        return values;
    }

    /// <summary>y[r] = Σ_c W[r, c]·x[c] for a row-major [rows, cols] matrix, accumulated in double.</summary>
    private static void MatVec(float[] w, ReadOnlySpan<double> x, Span<double> y)
    {
        int cols = x.Length;
        for (int r = 0; r < y.Length; r++)
        {
            var row = w.AsSpan(r * cols, cols);
            double sum = 0;
            for (int c = 0; c < cols; c++) sum += row[c] * x[c];
            y[r] = sum;
        }
    }

    private void RmsNorm(ReadOnlySpan<double> x, float[] weight, Span<double> y)
    {
        double squares = 0;
        foreach (double v in x) squares += v * v;
        double scale = 1.0 / Math.Sqrt(squares / x.Length + Epsilon);
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * scale * weight[i];
    }

    /// <summary>Rotates each head's pairs (2i, 2i+1), i &lt; d_rope/2, by pos · base^(-2i/d_rope).</summary>
    private void Rope(Span<double> heads, int headCount, int position)
    {
        for (int h = 0; h < headCount; h++)
        {
            var head = heads.Slice(h * HeadSize, HeadSize);
            for (int i = 0; i < RopeDimensions / 2; i++)
            {
                double theta = position * Math.Pow(RopeBase, -2.0 * i / RopeDimensions) / (_ropeFactors?[i] ?? 1.0);
                double cos = Math.Cos(theta), sin = Math.Sin(theta);
                double x0 = head[2 * i], x1 = head[2 * i + 1];
                head[2 * i] = x0 * cos - x1 * sin;
                head[2 * i + 1] = x0 * sin + x1 * cos;
            }
        }
    }

    /// <summary>One sequence: its KV cache (double precision) and the per-token work buffers, allocated once.</summary>
    public sealed class Session
    {
        private readonly ReferenceLlama _m;
        private readonly double[][] _keys, _values; // per layer [capacity, kvd]
        private readonly double[] _x, _xn, _q, _k, _v, _att, _proj, _gate, _up, _scores;
        private readonly GgmlType _cacheType;

        public Session(ReferenceLlama model, int capacity, GgmlType cacheType = GgmlType.F32)
        {
            _m = model;
            _cacheType = cacheType;
            Capacity = capacity;
            int d = model.EmbeddingLength, kvd = model.KvHeadCount * model.HeadSize, ff = model.FeedForwardLength;
            _keys = new double[model.BlockCount][];
            _values = new double[model.BlockCount][];
            for (int l = 0; l < model.BlockCount; l++) { _keys[l] = new double[capacity * kvd]; _values[l] = new double[capacity * kvd]; }
            (_x, _xn, _q, _att, _proj) = (new double[d], new double[d], new double[d], new double[d], new double[d]);
            (_k, _v) = (new double[kvd], new double[kvd]);
            (_gate, _up) = (new double[ff], new double[ff]);
            _scores = new double[capacity];
        }

        public int Capacity { get; }

        /// <summary>Positions already in the cache.</summary>
        public int Position { get; private set; }

        /// <summary>Runs <paramref name="token"/> at the next position and writes its [V] logits.</summary>
        public void Evaluate(int token, Span<double> logits)
        {
            var m = _m;
            if (Position >= Capacity) throw new InvalidOperationException($"reference session is full ({Capacity} positions)");
            if ((uint)token >= (uint)m.VocabularySize) throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside 0..{m.VocabularySize - 1}");
            if (logits.Length != m.VocabularySize) throw new ArgumentException($"logits must hold {m.VocabularySize} values", nameof(logits));
            int d = m.EmbeddingLength, hs = m.HeadSize, kvd = m.KvHeadCount * hs, pos = Position;
            int group = m.HeadCount / m.KvHeadCount;
            double scale = 1.0 / Math.Sqrt(hs);

            var embedding = m._tokenEmbedding.AsSpan(token * d, d);
            for (int i = 0; i < d; i++) _x[i] = embedding[i];

            for (int l = 0; l < m.BlockCount; l++)
            {
                var layer = m._layers[l];
                m.RmsNorm(_x, layer.AttnNorm, _xn);
                MatVec(layer.Q, _xn, _q);
                MatVec(layer.K, _xn, _k);
                MatVec(layer.V, _xn, _v);
                m.Rope(_q, m.HeadCount, pos);
                m.Rope(_k, m.KvHeadCount, pos);
                Store(_k, _keys[l].AsSpan(pos * kvd, kvd));
                Store(_v, _values[l].AsSpan(pos * kvd, kvd));

                for (int h = 0; h < m.HeadCount; h++)
                {
                    var q = _q.AsSpan(h * hs, hs);
                    int kvHead = h / group;
                    double max = double.NegativeInfinity;
                    for (int t = 0; t <= pos; t++) // causal: this token sees itself and every earlier position
                    {
                        var k = _keys[l].AsSpan(t * kvd + kvHead * hs, hs);
                        double dot = 0;
                        for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                        _scores[t] = dot * scale;
                        max = Math.Max(max, _scores[t]);
                    }
                    double total = 0;
                    for (int t = 0; t <= pos; t++) { _scores[t] = Math.Exp(_scores[t] - max); total += _scores[t]; }
                    var output = _att.AsSpan(h * hs, hs);
                    output.Clear();
                    for (int t = 0; t <= pos; t++)
                    {
                        double p = _scores[t] / total;
                        var v = _values[l].AsSpan(t * kvd + kvHead * hs, hs);
                        for (int i = 0; i < hs; i++) output[i] += p * v[i];
                    }
                }
                MatVec(layer.AttnOutput, _att, _proj);
                for (int i = 0; i < d; i++) _x[i] += _proj[i];

                m.RmsNorm(_x, layer.FfnNorm, _xn);
                MatVec(layer.FfnGate, _xn, _gate);
                MatVec(layer.FfnUp, _xn, _up);
                for (int i = 0; i < _gate.Length; i++) _gate[i] = _gate[i] / (1.0 + Math.Exp(-_gate[i])) * _up[i]; // silu(g)·u
                MatVec(layer.FfnDown, _gate, _proj);
                for (int i = 0; i < d; i++) _x[i] += _proj[i];
            }
            Position++;

            m.RmsNorm(_x, m._outputNorm, _xn);
            MatVec(m._output, _xn, logits);
        }

        /// <summary>One position's k or v into the cache: as it is, or through the blocks of a quantized cache type.</summary>
        private void Store(double[] row, Span<double> cache)
        {
            if (_cacheType is not (GgmlType.Q8_0 or GgmlType.Q4_0))
            {
                row.CopyTo(cache);
                return;
            }
            float[] decoded = KvBlocks.RoundTrip(_cacheType, [.. row.Select(x => (float)x)]);
            for (int i = 0; i < decoded.Length; i++) cache[i] = decoded[i];
        }
    }
}
