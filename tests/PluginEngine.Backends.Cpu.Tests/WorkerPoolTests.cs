using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

public class WorkerPoolTests
{
    private sealed class CountingJob(int items) : CpuParallelJob
    {
        public readonly int[] Hits = new int[items];
        public readonly int[] WorkersSeen = new int[8];
        private int _next;

        public void Reset() { _next = 0; Array.Clear(Hits); }

        public override void Execute(int worker, int workerCount)
        {
            Interlocked.Increment(ref WorkersSeen[worker]);
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < Hits.Length) Interlocked.Increment(ref Hits[i]);
        }
    }

    private sealed class ThrowingJob : CpuParallelJob
    {
        public override void Execute(int worker, int workerCount)
        {
            if (worker == workerCount - 1) throw new InvalidOperationException($"boom from worker {worker}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void EveryItemIsProcessedExactlyOnceAcrossRepeatedRuns(int threads)
    {
        using var pool = new CpuWorkerPool(threads);
        var job = new CountingJob(1000);
        for (int run = 0; run < 50; run++)
        {
            job.Reset();
            pool.Run(job);
            Assert.All(job.Hits, h => Assert.Equal(1, h));
        }
        // Every participant (caller = 0, workers 1..threads-1) took part in every run.
        for (int w = 0; w < threads; w++) Assert.Equal(50, job.WorkersSeen[w]);
    }

    [Fact]
    public void WorkersWakeUpAfterSleeping()
    {
        using var pool = new CpuWorkerPool(2);
        var job = new CountingJob(10);
        pool.Run(job);
        Thread.Sleep(300); // long enough for the spin phase to end and the worker to block
        job.Reset();
        pool.Run(job);
        Assert.All(job.Hits, h => Assert.Equal(1, h));
        Assert.Equal(2, job.WorkersSeen[1]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void AnExceptionInAnyParticipantIsRethrownToTheCaller(int threads)
    {
        using var pool = new CpuWorkerPool(threads);
        var ex = Assert.Throws<InvalidOperationException>(() => pool.Run(new ThrowingJob()));
        Assert.Contains("boom", ex.Message);
        var job = new CountingJob(5);
        pool.Run(job); // the pool is still usable
        Assert.All(job.Hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void RejectsNonPositiveThreadCountsAndUseAfterDispose()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuWorkerPool(0));
        var pool = new CpuWorkerPool(2);
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(new CountingJob(1)));
    }
}
