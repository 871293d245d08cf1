namespace PluginEngine.Core.Inference;

/// <summary>
/// A forward pass produced NaN or infinite logits: the model's weights (or a matrix of a type no kernel decodes
/// correctly) make its output meaningless. <see cref="LlamaContext.Evaluate"/> checks every step's logits, so this is
/// an error and never text or logits printed as a success. The message names the first bad logit and suggests
/// <c>--check-tensors</c>, which names the tensor.
/// </summary>
public sealed class NonFiniteLogitsException(string message) : Exception(message)
{
    /// <summary>
    /// Throws when <paramref name="logits"/> ([rows, <paramref name="vocab"/>], rows at positions from
    /// <paramref name="firstPosition"/>) holds a NaN or infinity. One pass over the floats: cheap beside a forward pass.
    /// </summary>
    public static void ThrowIfAny(ReadOnlySpan<float> logits, int vocab, int firstPosition)
    {
        int bad = -1, count = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            if (float.IsFinite(logits[i])) continue;
            if (bad < 0) bad = i;
            count++;
        }
        if (bad < 0) return;
        throw new NonFiniteLogitsException(
            $"the model produced non-finite logits: logit of token {bad % vocab} at position {firstPosition + bad / vocab} is {logits[bad]} " +
            $"({count} of {logits.Length} logits are NaN or infinite); its weights probably hold NaN/Inf values — run with --check-tensors to find the tensor");
    }
}
