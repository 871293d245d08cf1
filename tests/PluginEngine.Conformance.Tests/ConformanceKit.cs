using PluginEngine.Conformance;

namespace PluginEngine.Conformance.Tests;

// The kit's test classes, run here exactly as a plugin author's test project runs them (one sealed class per kit class).
public sealed class Ops : OpConformanceTests;

public sealed class FusedOps : FusedOpConformanceTests;

public sealed class SegmentOps : SegmentOpConformanceTests;

public sealed class BufferContract : BufferContractTests;

public sealed class RopeFrequencyFactorModels : RopeFrequencyFactorModelTests;

public sealed class SeedRegression(SeedModels models) : SeedRegressionTests(models);
