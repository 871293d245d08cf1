using System.Runtime.InteropServices;

namespace PluginEngine.Host.Commands;

/// <summary>
/// Turns the first SIGINT (Ctrl+C) or SIGTERM during a bench into a cancellation, so the bench stops after the current
/// evaluation and still prints the rows measured so far; the process is not terminated by that signal. A second signal
/// gets the default action (the process ends at once), for a bench stuck in a long evaluation. Dispose to restore the
/// default handling.
/// </summary>
internal sealed class BenchInterruption : IDisposable
{
    /// <summary>POSIX signal number of SIGINT (exit code 130 = 128 + 2).</summary>
    public const int SigInt = 2;

    /// <summary>POSIX signal number of SIGTERM (exit code 143 = 128 + 15).</summary>
    public const int SigTerm = 15;

    private readonly CancellationTokenSource _cancellation = new();
    private readonly TextWriter _error;
    private readonly List<PosixSignalRegistration> _registrations = [];
    private int _signal;

    private BenchInterruption(TextWriter error) => _error = error;

    /// <summary>Starts listening for SIGINT and SIGTERM (where the platform supports registering them).</summary>
    public static BenchInterruption Listen(TextWriter error)
    {
        var interruption = new BenchInterruption(error);
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
        {
            try
            {
                interruption._registrations.Add(PosixSignalRegistration.Create(signal, interruption.OnSignal));
            }
            catch (PlatformNotSupportedException)
            {
                // e.g. SIGTERM on Windows: that signal keeps its default action, the bench simply ends with the process.
            }
        }
        return interruption;
    }

    /// <summary>Cancelled by the first signal.</summary>
    public CancellationToken Token => _cancellation.Token;

    /// <summary>The POSIX number of the signal that cancelled the bench, or null.</summary>
    public int? Signal => Volatile.Read(ref _signal) is var s && s != 0 ? s : null;

    /// <summary>SIGINT or SIGTERM, for messages.</summary>
    public static string SignalName(int signal) => signal switch
    {
        SigInt => "SIGINT",
        SigTerm => "SIGTERM",
        _ => $"signal {signal}",
    };

    private void OnSignal(PosixSignalContext context)
    {
        int number = context.Signal == PosixSignal.SIGTERM ? SigTerm : SigInt;
        if (Interlocked.CompareExchange(ref _signal, number, 0) != 0) return; // second signal: default action, the process ends
        context.Cancel = true;
        _error.WriteLine($"{SignalName(number)}: stopping after the current evaluation and printing the rows measured so far (send it again to quit at once)");
        _cancellation.Cancel();
    }

    /// <summary>Unregisters the handlers; signals get their default action again.</summary>
    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        _cancellation.Dispose();
    }
}
