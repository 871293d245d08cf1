using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Gguf;

/// <summary>Layout choices for <see cref="GgufWriter"/>.</summary>
public sealed class GgufWriterOptions
{
    /// <summary>Format version to write: 2 or 3 (identical layout for little-endian files). Default 3.</summary>
    public uint Version { get; init; } = 3;

    /// <summary>Alignment of tensor data (a power of two). Default 32; any other value is also written as
    /// <c>general.alignment</c> so readers find it.</summary>
    public uint Alignment { get; init; } = GgufFile.DefaultAlignment;

    /// <summary>Byte that fills alignment gaps (before the data section, between tensors and after the last
    /// one). Default 0; loader tests use a non-zero value to simulate files with dirty gaps.</summary>
    public byte PaddingByte { get; init; }

    /// <summary>Whether the last tensor's data is padded up to the alignment (as llama.cpp does). Default
    /// true; false makes the file end exactly at the last tensor's last byte.</summary>
    public bool PadAfterLastTensor { get; init; } = true;
}

/// <summary>
/// Builds a GGUF file from ordered metadata and tensors. Tensors are laid out in the order added, each at
/// the next multiple of the alignment in the data section.
/// </summary>
public sealed class GgufWriter
{
    private const string AlignmentKey = "general.alignment";
    private static readonly Encoding Utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    private readonly OrderedDictionary<string, GgufValue> _metadata = new(StringComparer.Ordinal);
    private readonly List<(TensorInfo Info, ReadOnlyMemory<byte> Data)> _tensors = [];
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    /// <summary>Creates a writer; <paramref name="options"/> defaults to version 3, alignment 32, zero padding.</summary>
    public GgufWriter(GgufWriterOptions? options = null)
    {
        Options = options ?? new GgufWriterOptions();
        if (Options.Version is not (2 or 3))
            throw new ArgumentException($"GGUF version {Options.Version} cannot be written; use 2 or 3", nameof(options));
        if (!BitOperations.IsPow2(Options.Alignment))
            throw new ArgumentException($"alignment {Options.Alignment} is not a power of two", nameof(options));
    }

    /// <summary>The layout options in use.</summary>
    public GgufWriterOptions Options { get; }

    /// <summary>Adds a metadata pair (written in the order added). Duplicate keys are rejected; an explicit
    /// <c>general.alignment</c> must be a UInt32 equal to <see cref="GgufWriterOptions.Alignment"/>.</summary>
    public GgufWriter AddMetadata(string key, GgufValue value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        if (key == AlignmentKey && !(value.Type == GgufValueType.UInt32 && value.AsUInt32() == Options.Alignment))
            throw new ArgumentException($"metadata '{AlignmentKey}' = {value} ({value.Type}) disagrees with the writer's alignment {Options.Alignment} (UInt32); set GgufWriterOptions.Alignment instead", nameof(value));
        if (!_metadata.TryAdd(key, value))
            throw new ArgumentException($"metadata key '{key}' was already added", nameof(key));
        return this;
    }

    /// <summary>Adds a tensor; <paramref name="data"/> must be exactly its byte size. The memory is not
    /// copied: it must stay unchanged until the file is written.</summary>
    public GgufWriter AddTensor(string name, GgmlType type, long[] dims, ReadOnlyMemory<byte> data)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(dims);
        if (!GgmlTypes.IsKnown((uint)type)) throw new ArgumentOutOfRangeException(nameof(type), type, $"tensor '{name}': not a GGUF tensor type");
        return AddTensor(new TensorInfo(name, type, dims), data);
    }

    /// <summary>Adds a tensor described by <paramref name="info"/>; see <see cref="AddTensor(string, GgmlType, long[], ReadOnlyMemory{byte})"/>.</summary>
    public GgufWriter AddTensor(TensorInfo info, ReadOnlyMemory<byte> data)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (info.Name.Length == 0) throw new ArgumentException("tensor name is empty", nameof(info));
        if (data.Length != info.ByteSize)
            throw new ArgumentException($"tensor '{info.Name}' ({info.Type} [{string.Join(", ", info.Dims)}]) needs {info.ByteSize} bytes of data, got {data.Length}", nameof(data));
        if (!_tensorNames.Add(info.Name))
            throw new ArgumentException($"tensor '{info.Name}' was already added", nameof(info));
        _tensors.Add((info, data));
        return this;
    }

    /// <summary>Writes the file to <paramref name="path"/> (replacing it); a failed write deletes the partial file.</summary>
    public void WriteTo(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            WriteTo(stream);
        }
        catch
        {
            try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>Writes the file to <paramref name="stream"/> at its current position (need not be seekable).</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("the GGUF writer bulk-copies little-endian arrays and needs a little-endian host");
        uint alignment = Options.Alignment;
        var metadata = _metadata.ToList();
        if (alignment != GgufFile.DefaultAlignment && !_metadata.ContainsKey(AlignmentKey))
            metadata.Add(new(AlignmentKey, GgufValue.UInt32(alignment)));

        var output = new Output(stream);
        output.Bytes(GgufReader.Magic);
        output.UInt32(Options.Version);
        output.UInt64((ulong)_tensors.Count);
        output.UInt64((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            output.String(key);
            output.UInt32((uint)value.Type);
            WriteValue(output, value);
        }

        long relative = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var info = _tensors[i].Info;
            offsets[i] = relative = TensorPadding.AlignUp(relative, alignment);
            relative = checked(relative + info.ByteSize);
            output.String(info.Name);
            output.UInt32((uint)info.Dims.Count);
            foreach (long d in info.Dims) output.UInt64((ulong)d);
            output.UInt32((uint)info.Type);
            output.UInt64((ulong)offsets[i]);
        }

        if (_tensors.Count > 0)
        {
            output.PadTo(TensorPadding.AlignUp(output.Position, alignment), Options.PaddingByte);
            long dataStart = output.Position;
            for (int i = 0; i < _tensors.Count; i++)
            {
                output.PadTo(dataStart + offsets[i], Options.PaddingByte);
                output.Bytes(_tensors[i].Data.Span);
            }
            if (Options.PadAfterLastTensor)
                output.PadTo(TensorPadding.AlignUp(output.Position, alignment), Options.PaddingByte);
        }
        output.Flush();
    }

    private static void WriteValue(Output output, GgufValue value)
    {
        switch (value.Type)
        {
            case GgufValueType.String:
                output.String(value.AsString());
                break;
            case GgufValueType.Array:
                output.UInt32((uint)value.ElementType);
                output.UInt64((ulong)value.Count);
                switch (value.ArrayStorage)
                {
                    case string[] strings:
                        foreach (string s in strings) output.String(s);
                        break;
                    case GgufValue[] items:
                        foreach (var item in items) WriteValue(output, item);
                        break;
                    case var fixedSize:
                        output.Bytes(GgufValue.RawBytes(fixedSize)); // bool is one byte 0/1 in .NET, as in GGUF
                        break;
                }
                break;
            default:
                Span<byte> bits = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(bits, value.RawBits);
                output.Bytes(bits[..GgufValueTypes.FixedSize(value.Type)]); // low bytes hold the value
                break;
        }
    }

    /// <summary>A small write buffer that counts the bytes written (the stream need not be seekable).</summary>
    private sealed class Output(Stream stream)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _used;

        public long Position { get; private set; }

        public void UInt32(uint v)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(b, v);
            Bytes(b);
        }

        public void UInt64(ulong v)
        {
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(b, v);
            Bytes(b);
        }

        public void String(string s)
        {
            int n = Utf8.GetByteCount(s);
            UInt64((ulong)n);
            if (n <= _buffer.Length - _used)
            {
                Utf8.GetBytes(s, _buffer.AsSpan(_used));
                _used += n;
                Position += n;
                return;
            }
            byte[] rented = ArrayPool<byte>.Shared.Rent(n);
            try
            {
                Utf8.GetBytes(s, rented);
                Bytes(rented.AsSpan(0, n));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }

        public void Bytes(ReadOnlySpan<byte> data)
        {
            Position += data.Length;
            if (data.Length <= _buffer.Length - _used)
            {
                data.CopyTo(_buffer.AsSpan(_used));
                _used += data.Length;
                return;
            }
            FlushBuffer();
            if (data.Length >= _buffer.Length) { stream.Write(data); return; }
            data.CopyTo(_buffer);
            _used = data.Length;
        }

        public void PadTo(long target, byte fill)
        {
            while (Position < target)
            {
                if (_used == _buffer.Length) FlushBuffer();
                int n = (int)Math.Min(target - Position, _buffer.Length - _used);
                _buffer.AsSpan(_used, n).Fill(fill);
                _used += n;
                Position += n;
            }
        }

        public void Flush()
        {
            FlushBuffer();
            stream.Flush();
        }

        private void FlushBuffer()
        {
            if (_used == 0) return;
            stream.Write(_buffer, 0, _used);
            _used = 0;
        }
    }
}
