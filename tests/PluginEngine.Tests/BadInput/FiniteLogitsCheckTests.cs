using PluginEngine.Core.Inference;
using Xunit;

namespace PluginEngine.Tests.BadInput;

/// <summary>Issue 18, item 4: the per-step logits check finds every non-finite value, in the SIMD body and the tail.</summary>
public sealed class FiniteLogitsCheckTests
{
    [Theory]
    [InlineData(0, float.NaN)]
    [InlineData(17, float.PositiveInfinity)]
    [InlineData(99, float.NegativeInfinity)]
    [InlineData(102, float.NaN)] // in the scalar tail after the last whole vector
    public void A_non_finite_logit_is_named_by_token_and_position(int index, float value)
    {
        var logits = Enumerable.Range(0, 103).Select(i => (float)Math.Sin(i) * 30).ToArray();
        NonFiniteLogitsException.ThrowIfAny(logits, vocab: 103, firstPosition: 4);
        logits[index] = value;
        var error = Assert.Throws<NonFiniteLogitsException>(() => NonFiniteLogitsException.ThrowIfAny(logits, vocab: 103, firstPosition: 4));
        Assert.StartsWith($"the model produced non-finite logits: logit of token {index} at position 4 is {value} (1 of 103 logits", error.Message);
    }

    [Fact]
    public void Rows_of_all_positions_report_the_position_of_the_first_bad_row()
    {
        var logits = new float[3 * 10];
        logits[2 * 10 + 5] = float.NaN;
        var error = Assert.Throws<NonFiniteLogitsException>(() => NonFiniteLogitsException.ThrowIfAny(logits, vocab: 10, firstPosition: 7));
        Assert.Contains("logit of token 5 at position 9 is NaN", error.Message);
    }
}
