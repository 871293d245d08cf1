using PluginEngine.Core.Sampling;
using Xunit;

namespace PluginEngine.Tests.Sampling;

public class SamplerTests
{
    private static readonly SamplerSettings Plain = new() { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, RepeatPenalty = 1 };

    private static float[] RandomLogits(int vocab, int seed, float spread = 4f)
    {
        var random = new Random(seed);
        var logits = new float[vocab];
        for (int i = 0; i < vocab; i++) logits[i] = (float)(random.NextDouble() * 2 - 1) * spread;
        return logits;
    }

    private static float[] LogitsOf(params double[] probabilities) => probabilities.Select(p => (float)Math.Log(p)).ToArray();

    private static int ArgMax(float[] values) => Array.IndexOf(values, values.Max());

    private static int[] Counts(Sampler sampler, float[] logits, int draws)
    {
        var counts = new int[logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits, [])]++;
        return counts;
    }

    [Fact]
    public void Greedy_returns_the_argmax()
    {
        var sampler = new Sampler(SamplerSettings.Greedy);
        for (int seed = 0; seed < 20; seed++)
        {
            var logits = RandomLogits(1000 + seed, seed);
            Assert.Equal(ArgMax(logits), sampler.Sample(logits, []));
        }
    }

    [Fact]
    public void Same_seed_gives_the_same_sequence_and_different_seeds_differ()
    {
        var logits = RandomLogits(500, 1, spread: 1f);
        var settings = Plain with { Seed = 1234 };
        int[] Run(SamplerSettings s)
        {
            var sampler = new Sampler(s);
            return Enumerable.Range(0, 200).Select(_ => sampler.Sample(logits, [])).ToArray();
        }
        var first = Run(settings);
        Assert.Equal(first, Run(settings));
        Assert.True(first.Distinct().Count() > 50, "a near-flat distribution should give many different tokens");
        Assert.NotEqual(first, Run(settings with { Seed = 1235 }));
    }

    [Fact]
    public void Reset_restarts_the_sequence()
    {
        var logits = RandomLogits(100, 2, spread: 1f);
        var sampler = new Sampler(Plain with { Seed = 9 });
        var before = Enumerable.Range(0, 50).Select(_ => sampler.Sample(logits, [])).ToArray();
        sampler.Reset();
        Assert.Equal(before, Enumerable.Range(0, 50).Select(_ => sampler.Sample(logits, [])).ToArray());
    }

    [Fact]
    public void Top_k_of_one_equals_greedy()
    {
        var sampler = new Sampler(Plain with { Temperature = 1.5f, TopK = 1 });
        for (int seed = 0; seed < 50; seed++)
        {
            var logits = RandomLogits(300, seed);
            Assert.Equal(ArgMax(logits), sampler.Sample(logits, []));
        }
    }

    [Fact]
    public void Tiny_top_p_equals_greedy()
    {
        var sampler = new Sampler(Plain with { Temperature = 2f, TopP = 1e-6f });
        for (int seed = 0; seed < 50; seed++)
        {
            var logits = RandomLogits(300, seed);
            Assert.Equal(ArgMax(logits), sampler.Sample(logits, []));
        }
    }

    [Fact]
    public void Top_k_keeps_only_the_k_most_likely()
    {
        var counts = Counts(new Sampler(Plain with { TopK = 2 }), LogitsOf(0.1, 0.4, 0.05, 0.3, 0.15), 4000);
        Assert.Equal(0, counts[0] + counts[2] + counts[4]);
        Assert.True(counts[1] > 0 && counts[3] > 0);
    }

    [Fact]
    public void Top_p_keeps_the_smallest_prefix_reaching_p()
    {
        // 0.5 < 0.7 ≤ 0.5 + 0.3: tokens 0 and 1 stay.
        var counts = Counts(new Sampler(Plain with { TopP = 0.7f }), LogitsOf(0.5, 0.3, 0.15, 0.05), 4000);
        Assert.Equal(0, counts[2] + counts[3]);
        Assert.True(counts[0] > 0 && counts[1] > 0);
    }

    [Fact]
    public void Min_p_drops_tokens_below_a_fraction_of_the_best()
    {
        // Threshold 0.5 · 0.5 = 0.25: tokens 0 (0.5) and 1 (0.3) stay, 2 (0.15) and 3 (0.05) go.
        var filtered = Counts(new Sampler(Plain with { MinP = 0.5f }), LogitsOf(0.5, 0.3, 0.15, 0.05), 4000);
        Assert.Equal(0, filtered[2] + filtered[3]);
        Assert.True(filtered[0] > 0 && filtered[1] > 0);
        var unfiltered = Counts(new Sampler(Plain), LogitsOf(0.5, 0.3, 0.15, 0.05), 4000);
        Assert.True(unfiltered[2] > 0 && unfiltered[3] > 0, "without min-p every token can be drawn");
    }

    [Fact]
    public void Top_p_is_measured_before_min_p_removes_anything()
    {
        // Top-p 0.6 on (0.5, 0.3, 0.2) keeps tokens 0 and 1; min-p 0.5 (threshold 0.25) also keeps 0 and 1.
        // Renormalizing after min-p first would give token 0 alone 0.625 ≥ 0.6 and wrongly drop token 1.
        var counts = Counts(new Sampler(Plain with { TopP = 0.6f, MinP = 0.5f }), LogitsOf(0.5, 0.3, 0.2), 4000);
        Assert.Equal(0, counts[2]);
        Assert.InRange(counts[1] / 4000.0, 0.3, 0.45); // 0.3 / 0.8 = 0.375
    }

    [Fact]
    public void Frequencies_follow_the_distribution()
    {
        // 20k seeded draws: deterministic, and each frequency within 0.02 of its probability
        // (about 6 standard deviations, so the bound holds for any reasonable generator).
        var counts = Counts(new Sampler(Plain with { Seed = 77 }), LogitsOf(0.6, 0.3, 0.1), 20000);
        Assert.Equal(0.6, counts[0] / 20000.0, 0.02);
        Assert.Equal(0.3, counts[1] / 20000.0, 0.02);
        Assert.Equal(0.1, counts[2] / 20000.0, 0.02);
    }

    [Fact]
    public void Temperature_sharpens_and_flattens()
    {
        float[] logits = LogitsOf(0.6, 0.3, 0.1);
        var cold = Counts(new Sampler(Plain with { Temperature = 0.25f }), logits, 5000);
        var hot = Counts(new Sampler(Plain with { Temperature = 4f }), logits, 5000);
        // p ∝ p0^(1/T): at T = 0.25 token 0 has 0.6⁴/(0.6⁴+0.3⁴+0.1⁴) ≈ 0.94; at T = 4 about 0.41.
        Assert.Equal(0.94, cold[0] / 5000.0, 0.03);
        Assert.Equal(0.41, hot[0] / 5000.0, 0.03);
    }

    [Fact]
    public void Repeat_penalty_divides_positive_logits_and_changes_the_argmax()
    {
        float[] logits = [2.0f, 1.9f, -1f];
        var sampler = new Sampler(SamplerSettings.Greedy with { RepeatPenalty = 1.1f });
        Assert.Equal(0, sampler.Sample(logits, []));
        Assert.Equal(1, sampler.Sample(logits, [0]));           // 2.0 / 1.1 ≈ 1.82 < 1.9
        Assert.Equal(1, sampler.Sample(logits, [0, 0, 0, 0]));  // penalized once per distinct token, not per occurrence
        Assert.Equal(2.0f, logits[0]);                          // the caller's logits are not modified
    }

    [Fact]
    public void Repeat_penalty_multiplies_negative_logits()
    {
        float[] logits = [-1.0f, -1.05f];
        var sampler = new Sampler(SamplerSettings.Greedy with { RepeatPenalty = 1.1f });
        Assert.Equal(1, sampler.Sample(logits, [0])); // -1.0 · 1.1 = -1.1 < -1.05
    }

    [Fact]
    public void Repeat_penalty_only_looks_at_the_last_n_tokens()
    {
        float[] logits = [2.0f, 1.9f, 0f];
        var sampler = new Sampler(SamplerSettings.Greedy with { RepeatPenalty = 1.1f, RepeatLastN = 2 });
        Assert.Equal(0, sampler.Sample(logits, [0, 2, 2]));
        Assert.Equal(1, sampler.Sample(logits, [2, 0, 2]));
    }

    [Fact]
    public void Sampling_does_not_allocate_once_warm()
    {
        var logits = RandomLogits(32000, 5);
        int[] recent = [1, 2, 3, 500, 31999];
        var sampler = new Sampler(new SamplerSettings { RepeatPenalty = 1.1f, TopK = 0, TopP = 0.9f, MinP = 0.01f });
        for (int i = 0; i < 20; i++) sampler.Sample(logits, recent);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++) sampler.Sample(logits, recent);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Theory]
    [InlineData(nameof(SamplerSettings.TopP), 0f)]
    [InlineData(nameof(SamplerSettings.TopP), 1.5f)]
    [InlineData(nameof(SamplerSettings.MinP), -0.1f)]
    [InlineData(nameof(SamplerSettings.MinP), 1.1f)]
    [InlineData(nameof(SamplerSettings.TopK), -1f)]
    [InlineData(nameof(SamplerSettings.RepeatPenalty), 0f)]
    [InlineData(nameof(SamplerSettings.RepeatLastN), -1f)]
    [InlineData(nameof(SamplerSettings.Temperature), float.NaN)]
    public void Invalid_settings_are_rejected_naming_the_setting(string setting, float value)
    {
        var settings = setting switch
        {
            nameof(SamplerSettings.TopP) => new SamplerSettings { TopP = value },
            nameof(SamplerSettings.MinP) => new SamplerSettings { MinP = value },
            nameof(SamplerSettings.TopK) => new SamplerSettings { TopK = (int)value },
            nameof(SamplerSettings.RepeatPenalty) => new SamplerSettings { RepeatPenalty = value },
            nameof(SamplerSettings.RepeatLastN) => new SamplerSettings { RepeatLastN = (int)value },
            _ => new SamplerSettings { Temperature = value },
        };
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(settings));
        Assert.Equal(setting, ex.ParamName);
    }

    [Fact]
    public void Bad_inputs_are_rejected_with_the_position_named()
    {
        var sampler = new Sampler(new SamplerSettings { RepeatPenalty = 1.1f });
        var outOfVocab = Assert.Throws<ArgumentOutOfRangeException>(() => sampler.Sample(new float[10], [1, 10]));
        Assert.Contains("index 1", outOfVocab.Message);
        var nan = Assert.Throws<ArgumentException>(() => sampler.Sample([0f, float.NaN, 1f], []));
        Assert.Contains("token 1", nan.Message);
        Assert.Throws<ArgumentException>(() => sampler.Sample([], []));
        Assert.Throws<ArgumentException>(() => sampler.Sample([float.NegativeInfinity, float.NegativeInfinity], []));
        // A rejected call must not leave tokens marked as penalized for the next one.
        Assert.Equal(1, new Sampler(SamplerSettings.Greedy).Sample([0f, 1f], []));
        Assert.Equal(1, sampler.Sample([0f, 1f, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity,
            float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity], []));
    }

    [Fact]
    public void Masked_tokens_are_never_drawn()
    {
        float[] logits = [float.NegativeInfinity, 0f, float.NegativeInfinity, 0f];
        var counts = Counts(new Sampler(Plain), logits, 1000);
        Assert.Equal(0, counts[0] + counts[2]);
    }
}

public class Xoshiro256StarStarTests
{
    [Fact]
    public void Matches_the_reference_outputs_from_state_1_2_3_4()
    {
        var random = new Xoshiro256StarStar(1, 2, 3, 4);
        Assert.Equal(11520UL, random.NextUInt64());
        Assert.Equal(0UL, random.NextUInt64());
        Assert.Equal(1509978240UL, random.NextUInt64());
        Assert.Equal(1215971899390074240UL, random.NextUInt64());
    }

    [Fact]
    public void SplitMix64_matches_the_reference_first_output_for_seed_0()
    {
        ulong state = 0;
        Assert.Equal(0xE220A8397B1DCDAFUL, Xoshiro256StarStar.SplitMix64(ref state));
    }

    [Fact]
    public void Doubles_are_in_the_unit_interval()
    {
        var random = new Xoshiro256StarStar(3);
        for (int i = 0; i < 10000; i++)
        {
            double d = random.NextDouble();
            Assert.InRange(d, 0.0, 0.9999999999999999);
        }
    }
}
