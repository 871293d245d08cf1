using System.Runtime.ExceptionServices;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// A unit of parallel work run by <see cref="CpuWorkerPool"/>. Implementations are reusable objects
/// (typically cached in scratch state) so that dispatching allocates nothing.
/// </summary>
public abstract class CpuParallelJob
{
    /// <summary>Runs this participant's share; <paramref name="worker"/> is 0..<paramref name="workerCount"/>-1
    /// (0 is the calling thread). Shares MUST be claimed dynamically (e.g. through an atomic counter) until none is
    /// left: a worker that arrives after the caller has finished every share does not run the job at all.</summary>
    public abstract void Execute(int worker, int workerCount);
}

/// <summary>
/// A fixed set of background threads that run one <see cref="CpuParallelJob"/> at a time together with the
/// calling thread. Workers spin briefly after each job (generation steps come back-to-back during a forward
/// pass) and then sleep on a monitor, so an idle pool costs no CPU. <see cref="Run"/> allocates nothing.
/// Not reentrant: one job at a time, from one thread at a time.
/// </summary>
public sealed class CpuWorkerPool : IDisposable
{
    private const int SpinIterations = 20_000;

    private readonly Thread[] _threads;
    private readonly object _gate = new();
    private CpuParallelJob? _job;
    private long _generation;
    private long _closedGeneration; // jobs up to this generation take no new participants
    private int _inside;             // workers currently inside a job's Execute
    private int _sleepers;
    private volatile bool _disposed;
    private Exception? _failure;

    /// <summary>Creates a pool whose jobs run on <paramref name="threadCount"/> threads in all (the caller plus
    /// <paramref name="threadCount"/>-1 background threads).</summary>
    public CpuWorkerPool(int threadCount)
    {
        if (threadCount < 1) throw new ArgumentOutOfRangeException(nameof(threadCount), threadCount, "a pool needs at least one thread");
        ThreadCount = threadCount;
        _threads = new Thread[threadCount - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int worker = i + 1;
            _threads[i] = new Thread(() => WorkerLoop(worker)) { IsBackground = true, Name = $"pluginengine-cpu-{worker}" };
            _threads[i].Start();
        }
    }

    /// <summary>Threads that take part in each job, the caller included.</summary>
    public int ThreadCount { get; }

    /// <summary>Runs <paramref name="job"/> on every thread of the pool and returns when all have finished.
    /// An exception thrown by any participant is rethrown here.</summary>
    public void Run(CpuParallelJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_threads.Length == 0)
        {
            job.Execute(0, 1);
            return;
        }
        _failure = null;
        _job = job;
        long generation = Interlocked.Increment(ref _generation); // publishes _job to the workers
        if (Volatile.Read(ref _sleepers) > 0)
            lock (_gate) Monitor.PulseAll(_gate);
        try
        {
            job.Execute(0, ThreadCount);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
        }
        // Every share is claimed once the caller's Execute returns (jobs claim work dynamically), so a worker that has
        // not joined yet is not needed: close the job to late arrivals and wait only for those already inside.
        // (Waiting for every worker to check in costs a scheduler quantum per op when the machine is oversubscribed.)
        Interlocked.Exchange(ref _closedGeneration, generation);
        var wait = new SpinWait();
        while (Volatile.Read(ref _inside) != 0) wait.SpinOnce(sleep1Threshold: -1);
        _job = null;
        if (_failure is { } failure) ExceptionDispatchInfo.Throw(failure);
    }

    private void WorkerLoop(int worker)
    {
        long seen = 0;
        while (true)
        {
            long generation = WaitForWork(seen);
            if (_disposed) return;
            seen = generation;
            Interlocked.Increment(ref _inside);
            try
            {
                // Dekker-style handshake with Run: either we see the job closed and skip it, or Run sees us inside and waits.
                if (Interlocked.Read(ref _closedGeneration) < generation) _job!.Execute(worker, ThreadCount);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, e, null);
            }
            Interlocked.Decrement(ref _inside);
        }
    }

    private long WaitForWork(long seen)
    {
        for (int i = 0; i < SpinIterations; i++)
        {
            long g = Volatile.Read(ref _generation);
            if (g != seen || _disposed) return g;
            Thread.SpinWait(8);
        }
        lock (_gate)
        {
            Interlocked.Increment(ref _sleepers);
            try
            {
                // Re-checked under the lock after announcing ourselves as a sleeper: Run either sees the sleeper
                // count and pulses (which cannot happen before we Wait, since we hold the lock), or we see its new generation.
                while (Volatile.Read(ref _generation) == seen && !_disposed) Monitor.Wait(_gate);
            }
            finally
            {
                Interlocked.Decrement(ref _sleepers);
            }
        }
        return Volatile.Read(ref _generation);
    }

    /// <summary>Stops the background threads (after any job in progress).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_gate) Monitor.PulseAll(_gate);
        foreach (var t in _threads) t.Join();
    }
}
