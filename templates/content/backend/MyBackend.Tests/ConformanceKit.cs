using PluginEngine.Conformance;

namespace MyBackend.Tests;

// The conformance kit, one class per kit class: each runs every case for every backend of plugins.json but the cpu reference.
public sealed class Ops : OpConformanceTests;

public sealed class FusedOps : FusedOpConformanceTests;

public sealed class SegmentOps : SegmentOpConformanceTests;

public sealed class BufferContract : BufferContractTests;

public sealed class RopeFrequencyFactorModels : RopeFrequencyFactorModelTests;

public sealed class SeedRegression(SeedModels models) : SeedRegressionTests(models);
