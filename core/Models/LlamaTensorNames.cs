namespace PluginEngine.Core.Models;

/// <summary>GGUF tensor names of the llama graph (as llama.cpp's converters write them).</summary>
public static class LlamaTensorNames
{
    public const string TokenEmbedding = "token_embd.weight";
    public const string OutputNorm = "output_norm.weight";
    public const string Output = "output.weight";
    /// <summary>Per-pair RoPE frequency factors, F32 [ropeDims/2] (Llama 3.1-style "llama3" RoPE scaling).</summary>
    public const string RopeFrequencies = "rope_freqs.weight";

    public static string AttnNorm(int layer) => $"blk.{layer}.attn_norm.weight";
    public static string Q(int layer) => $"blk.{layer}.attn_q.weight";
    public static string K(int layer) => $"blk.{layer}.attn_k.weight";
    public static string V(int layer) => $"blk.{layer}.attn_v.weight";
    public static string QBias(int layer) => $"blk.{layer}.attn_q.bias";
    public static string KBias(int layer) => $"blk.{layer}.attn_k.bias";
    public static string VBias(int layer) => $"blk.{layer}.attn_v.bias";
    public static string AttnOutput(int layer) => $"blk.{layer}.attn_output.weight";
    public static string FfnNorm(int layer) => $"blk.{layer}.ffn_norm.weight";
    public static string FfnGate(int layer) => $"blk.{layer}.ffn_gate.weight";
    public static string FfnUp(int layer) => $"blk.{layer}.ffn_up.weight";
    public static string FfnDown(int layer) => $"blk.{layer}.ffn_down.weight";

    /// <summary>The layer a tensor belongs to (blk.N.*), or -1 for the model-level tensors.</summary>
    public static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return -1;
        int dot = name.IndexOf('.', 4);
        return dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), out int layer) ? layer : -1;
    }
}
