using Microsoft.Extensions.Logging;

namespace PluginEngine.Host.Logging;

/// <summary>
/// Writes log lines ("info: Category: message") to a <see cref="TextWriter"/> (stderr, or a test's writer).
/// The Microsoft console logger writes to the process console only, which in-process tests cannot capture.
/// </summary>
public sealed class TextWriterLoggerProvider(TextWriter writer) : ILoggerProvider
{
    private readonly Lock _gate = new();

    /// <inheritdoc />
    public ILogger CreateLogger(string categoryName) => new Logger(this, ShortCategory(categoryName));

    /// <inheritdoc />
    public void Dispose() { }

    private void Write(string line)
    {
        lock (_gate) writer.WriteLine(line);
    }

    /// <summary>"PluginEngine.Core.Plugins.PluginHost" → "PluginHost": the namespace adds noise, not information.</summary>
    private static string ShortCategory(string category)
    {
        int dot = category.LastIndexOf('.');
        return dot >= 0 ? category[(dot + 1)..] : category;
    }

    private static string LevelTag(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => "none",
    };

    private sealed class Logger(TextWriterLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string message = formatter(state, exception);
            provider.Write(exception is null
                ? $"{LevelTag(logLevel)}: {category}: {message}"
                : $"{LevelTag(logLevel)}: {category}: {message}{Environment.NewLine}{exception}");
        }
    }
}
