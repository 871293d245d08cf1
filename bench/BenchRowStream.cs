namespace PluginEngine.Bench;

/// <summary>
/// Bench output written as the rows arrive. The line formats (csv, jsonl) write each row the moment it is added and flush,
/// so a run that is cut off (a time limit, a killed process) keeps every finished test; csv writes its header with the
/// first row. The whole-document formats (markdown table, JSON array) collect the rows and write them in
/// <see cref="Complete"/>. With <c>streamRows: false</c> every format is written in <see cref="Complete"/>: that is for
/// callers that still change rows after adding them (the llama.cpp ratio column is attached once the reference has run).
/// </summary>
public sealed class BenchRowStream
{
    private readonly TextWriter _output;
    private readonly List<BenchResult> _rows = [];
    private int _written;
    private bool _completed;

    /// <summary>Creates a stream writing <paramref name="format"/> to <paramref name="output"/>.</summary>
    /// <param name="output">Where the rows go (stdout).</param>
    /// <param name="format">The output format.</param>
    /// <param name="streamRows">False to defer the line formats to <see cref="Complete"/> as well.</param>
    public BenchRowStream(TextWriter output, BenchOutputFormat format, bool streamRows = true)
    {
        _output = output ?? throw new ArgumentNullException(nameof(output));
        if (!Enum.IsDefined(format)) throw new ArgumentOutOfRangeException(nameof(format), format, "unknown bench output format");
        Format = format;
        StreamsRows = streamRows && format is BenchOutputFormat.Csv or BenchOutputFormat.JsonLines;
    }

    /// <summary>The output format.</summary>
    public BenchOutputFormat Format { get; }

    /// <summary>True when <see cref="Add"/> writes each row at once (csv and jsonl, unless deferred).</summary>
    public bool StreamsRows { get; }

    /// <summary>Every row added so far, in order.</summary>
    public IReadOnlyList<BenchResult> Rows => _rows;

    /// <summary>Adds a row; for a streaming format, writes and flushes it before returning.</summary>
    /// <exception cref="InvalidOperationException">After <see cref="Complete"/>.</exception>
    public void Add(BenchResult row)
    {
        ArgumentNullException.ThrowIfNull(row);
        if (_completed) throw new InvalidOperationException("bench output: a row was added after the output was completed");
        _rows.Add(row);
        if (StreamsRows) WritePending();
    }

    /// <summary>
    /// Writes whatever is not written yet: the rows of a line format that were deferred, or the whole markdown/JSON document.
    /// Writes nothing when no row was added (as before streaming: an empty run prints no table). Call once.
    /// </summary>
    /// <param name="machine">The machine, for the markdown header.</param>
    /// <param name="devices">The devices, for the markdown header.</param>
    public void Complete(MachineInfo machine, IReadOnlyList<BenchDeviceInfo> devices)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ArgumentNullException.ThrowIfNull(devices);
        if (_completed) throw new InvalidOperationException("bench output: Complete was called twice");
        _completed = true;
        if (Format is BenchOutputFormat.Csv or BenchOutputFormat.JsonLines) WritePending();
        else if (_rows.Count > 0) BenchOutput.Write(_output, Format, _rows, machine, devices);
        _output.Flush();
    }

    private void WritePending()
    {
        for (; _written < _rows.Count; _written++)
        {
            var row = _rows[_written];
            if (Format == BenchOutputFormat.JsonLines) BenchOutput.WriteJsonLine(_output, row);
            else
            {
                if (_written == 0) BenchOutput.WriteCsvHeader(_output);
                BenchOutput.WriteCsvRow(_output, row);
            }
        }
        _output.Flush(); // the point of streaming: the row is in the file even if the process is killed next
    }
}
