using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

public class WorkerPoolTests
{
    /// <summary>
    /// Items claimed through a counter. With <paramref name="rendezvous"/>, the caller (worker 0) waits until every
    /// other worker has joined before claiming anything, so tests can rely on every worker taking part (normally a
    /// worker that arrives after all items are claimed skips the job).
    /// </summary>
    private class CountingJob(int items, bool rendezvous = false) : CpuParallelJob
    {
        public readonly int[] Hits = new int[items];
        public readonly int[] WorkersSeen = new int[8];
        private int _next, _joined;

        public void Reset() { _next = 0; _joined = 0; Array.Clear(Hits); }

        public override void Execute(int worker, int workerCount)
        {
            Interlocked.Increment(ref WorkersSeen[worker]);
            Interlocked.Increment(ref _joined);
            if (rendezvous && worker == 0)
                Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref _joined) == workerCount, TimeSpan.FromSeconds(30)), "workers never joined");
            Work(worker, workerCount);
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < Hits.Length) Interlocked.Increment(ref Hits[i]);
        }

        protected virtual void Work(int worker, int workerCount) { }
    }

    private sealed class ThrowingJob() : CountingJob(1, rendezvous: true)
    {
        protected override void Work(int worker, int workerCount)
        {
            if (worker == workerCount - 1) throw new InvalidOperationException($"boom from worker {worker}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Every_item_is_processed_exactly_once_across_repeated_runs(int threads)
    {
        using var pool = new CpuWorkerPool(threads);
        var job = new CountingJob(1000);
        var together = new CountingJob(1000, rendezvous: true);
        for (int run = 0; run < 50; run++)
        {
            job.Reset();
            pool.Run(job);
            Assert.All(job.Hits, h => Assert.Equal(1, h));
            together.Reset();
            pool.Run(together);
            Assert.All(together.Hits, h => Assert.Equal(1, h));
        }
        // The caller always takes part; late workers may skip a job whose items are all claimed...
        Assert.Equal(50, job.WorkersSeen[0]);
        // ...but every worker is woken for every job: when the caller waits for them, all of them take part.
        for (int w = 0; w < threads; w++) Assert.Equal(50, together.WorkersSeen[w]);
    }

    [Fact]
    public void Workers_wake_up_after_sleeping()
    {
        using var pool = new CpuWorkerPool(2);
        var job = new CountingJob(10, rendezvous: true);
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
    public void An_exception_in_any_participant_is_rethrown_to_the_caller(int threads)
    {
        using var pool = new CpuWorkerPool(threads);
        var ex = Assert.Throws<InvalidOperationException>(() => pool.Run(new ThrowingJob()));
        Assert.Contains("boom", ex.Message);
        var job = new CountingJob(5);
        pool.Run(job); // the pool is still usable
        Assert.All(job.Hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void Non_positive_thread_counts_and_use_after_dispose_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CpuWorkerPool(0));
        var pool = new CpuWorkerPool(2);
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Run(new CountingJob(1)));
    }
}
