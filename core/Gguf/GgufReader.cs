using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Gguf;

/// <summary>
/// Reads the header, metadata and tensor descriptions of GGUF files (versions 2 and 3, little-endian)
/// without reading tensor data. Every field is bounds-checked against the file length before anything is
/// allocated for it, so hostile input fails with a <see cref="GgufFormatException"/> (never a crash, a hang,
/// or an allocation larger than the file).
/// </summary>
public static class GgufReader
{
    /// <summary>The four bytes every GGUF file starts with.</summary>
    public static ReadOnlySpan<byte> Magic => "GGUF"u8;

    /// <summary>Deepest nesting of arrays accepted (an array of arrays is depth 2).</summary>
    public const int MaxArrayDepth = 16;

    /// <summary>Size of the fixed header: magic, version, tensor count, metadata count.</summary>
    public const int HeaderSize = 4 + 4 + 8 + 8;

    /// <summary>Reads the file at <paramref name="path"/> through a sequential buffered stream.</summary>
    public static GgufFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        // The parser does its own buffering, so the FileStream's buffer would only add a copy.
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        return Read(stream, path, stream.Length);
    }

    /// <summary>
    /// Reads a GGUF image from <paramref name="stream"/>, starting at its current position, which is taken
    /// as file offset 0. <paramref name="length"/> is the image's total length (offsets and sizes are checked
    /// against it); <paramref name="displayPath"/> names the file in errors.
    /// </summary>
    public static GgufFile Read(Stream stream, string displayPath, long length)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(displayPath);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!stream.CanRead) throw new ArgumentException("stream is not readable", nameof(stream));
        return new Parser(stream, displayPath, length).Parse();
    }

    /// <summary>A field name built only when an error needs it, so hot loops allocate nothing:
    /// <c>Prefix</c>, then <c>[Index]</c> when Index ≥ 0, then <c>Suffix</c>.</summary>
    private readonly struct Field(string prefix, long index = -1, string? suffix = null)
    {
        public static implicit operator Field(string name) => new(name);
        public override string ToString() => index < 0 ? prefix + suffix : $"{prefix}[{index}]{suffix}";
    }

    private sealed class Parser(Stream stream, string path, long length)
    {
        private const int BufferSize = 64 * 1024;
        // Fewest bytes a tensor info can take: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
        private const int MinTensorInfoSize = 8 + 4 + 8 + 4 + 8;
        // Fewest bytes a key/value pair can take: empty key (8), type (4), a one-byte value.
        private const int MinKeyValueSize = 8 + 4 + 1;

        private static readonly Encoding Utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

        private readonly byte[] _buffer = new byte[BufferSize];
        private long _bufferFileOffset; // file offset of _buffer[0]
        private int _start;             // next unread byte in _buffer
        private int _end;               // end of valid bytes in _buffer

        private long Position => _bufferFileOffset + _start;
        private long Remaining => length - Position;

        public GgufFile Parse()
        {
            // ---- header ----
            Ensure(4, "header.magic");
            if (!_buffer.AsSpan(_start, 4).SequenceEqual(Magic))
                throw Error(0, "header.magic", $"expected the bytes 'GGUF' (47 47 55 46), found {Convert.ToHexString(_buffer, _start, 4)}; this is not a GGUF file");
            _start += 4;

            long versionAt = Position;
            uint version = ReadUInt32("header.version");
            if (version == 1)
                throw Error(versionAt, "header.version", "GGUF version 1 is not supported (it used 32-bit counts); re-convert the model with a current llama.cpp");
            if (version is not (2 or 3))
            {
                string hint = BinaryPrimitives.ReverseEndianness(version) is 2 or 3 ? " (this looks like a big-endian GGUF, which is not supported)" : "";
                throw Error(versionAt, "header.version", $"unsupported GGUF version {version}; versions 2 and 3 are supported{hint}");
            }

            long tensorCountAt = Position;
            ulong tensorCount = ReadUInt64("header.tensor_count");
            long kvCountAt = Position;
            ulong kvCount = ReadUInt64("header.kv_count");
            long afterHeader = Remaining;
            if (tensorCount > (ulong)(afterHeader / MinTensorInfoSize) || tensorCount > int.MaxValue)
                throw Error(tensorCountAt, "header.tensor_count", $"{tensorCount} tensors cannot fit in the {afterHeader} bytes after the header (each tensor info takes at least {MinTensorInfoSize} bytes)");
            if (kvCount > (ulong)(afterHeader / MinKeyValueSize) || kvCount > int.MaxValue)
                throw Error(kvCountAt, "header.kv_count", $"{kvCount} metadata pairs cannot fit in the {afterHeader} bytes after the header (each takes at least {MinKeyValueSize} bytes)");
            if (tensorCount * MinTensorInfoSize + kvCount * MinKeyValueSize > (ulong)afterHeader)
                throw Error(kvCountAt, "header.kv_count", $"{kvCount} metadata pairs and {tensorCount} tensor infos cannot both fit in the {afterHeader} bytes after the header");

            // ---- metadata ----
            var metadata = new OrderedDictionary<string, GgufValue>((int)Math.Min(kvCount, 1024), StringComparer.Ordinal);
            uint alignment = GgufFile.DefaultAlignment;
            for (int i = 0; i < (int)kvCount; i++)
            {
                long keyAt = Position;
                string key = ReadString(new Field("metadata", i, ".key"));
                if (metadata.ContainsKey(key))
                    throw Error(keyAt, $"metadata[{i}].key", $"duplicate metadata key '{key}' (keys must be unique; first seen at metadata[{metadata.IndexOf(key)}])");
                string valueField = $"metadata['{key}']";
                long typeAt = Position;
                uint rawType = ReadUInt32(valueField + ".type");
                if (!GgufValueTypes.IsKnown(rawType))
                    throw Error(typeAt, valueField + ".type", $"unknown value type {rawType} (known types are 0..12)");
                var type = (GgufValueType)rawType;
                long valueAt = Position;
                GgufValue value = ReadValue(type, valueField, key, depth: 0);

                if (key == "general.alignment")
                {
                    if (type != GgufValueType.UInt32)
                        throw Error(typeAt, valueField, $"general.alignment must be of type UInt32, found {type}");
                    uint a = value.AsUInt32();
                    if (!BitOperations.IsPow2(a))
                        throw Error(valueAt, valueField, $"general.alignment is {a}, which is not a power of two");
                    alignment = a;
                }
                metadata.Add(key, value);
            }

            // ---- tensor infos ----
            int count = (int)tensorCount;
            var tensors = new List<(TensorInfo Info, long RelativeOffset, long OffsetFieldAt)>(Math.Min(count, 4096));
            var seenNames = new Dictionary<string, int>(Math.Min(count, 4096), StringComparer.Ordinal);
            Span<long> dims = stackalloc long[TensorInfo.MaxDims];
            for (int i = 0; i < count; i++)
            {
                long nameAt = Position;
                string name = ReadString(new Field("tensor_infos", i, ".name"));
                if (name.Length == 0) throw Error(nameAt, $"tensor_infos[{i}].name", "tensor name is empty");
                if (!seenNames.TryAdd(name, i))
                    throw Error(nameAt, $"tensor_infos[{i}].name", $"duplicate tensor name '{name}' (first at tensor_infos[{seenNames[name]}])");

                long nDimsAt = Position;
                uint nDims = ReadUInt32(new Field("tensor_infos", i, ".n_dims"));
                if (nDims is 0 or > TensorInfo.MaxDims)
                    throw Error(nDimsAt, $"tensor_infos[{i}].n_dims", $"tensor '{name}' has {nDims} dimensions; 1 to {TensorInfo.MaxDims} are allowed");

                long dimsAt = Position;
                long elements = 1;
                for (int d = 0; d < (int)nDims; d++)
                {
                    long dimAt = Position;
                    ulong dim = ReadUInt64(new Field($"tensor_infos[{i}].dims", d));
                    if (dim == 0)
                        throw Error(dimAt, $"tensor_infos[{i}].dims[{d}]", $"tensor '{name}' has a zero dimension (every dimension must be at least 1)");
                    if (dim > long.MaxValue || elements > long.MaxValue / (long)dim)
                        throw Error(dimAt, $"tensor_infos[{i}].dims[{d}]", $"tensor '{name}': dimension {dim} makes the element count overflow a 64-bit integer");
                    dims[d] = (long)dim;
                    elements *= (long)dim;
                }

                long typeAt = Position;
                uint rawType = ReadUInt32(new Field("tensor_infos", i, ".type"));
                if (!GgmlTypes.IsKnown(rawType))
                    throw Error(typeAt, $"tensor_infos[{i}].type", $"tensor '{name}' has unknown tensor type {rawType}");
                var typeInfo = GgmlTypes.Get((GgmlType)rawType);
                if (dims[0] % typeInfo.BlockSize != 0)
                    throw Error(dimsAt, $"tensor_infos[{i}].dims[0]", $"tensor '{name}' of type {typeInfo.Type} has rows of {dims[0]} elements, not a multiple of the block size {typeInfo.BlockSize}");
                long rowCount = elements / dims[0];
                long blocksPerRow = dims[0] / typeInfo.BlockSize;
                if (blocksPerRow > long.MaxValue / typeInfo.BytesPerBlock
                    || blocksPerRow * typeInfo.BytesPerBlock > long.MaxValue / rowCount)
                    throw Error(dimsAt, $"tensor_infos[{i}].dims", $"tensor '{name}': the byte size of {elements} {typeInfo.Type} elements overflows a 64-bit integer");
                long byteSize = blocksPerRow * typeInfo.BytesPerBlock * rowCount;
                if (byteSize > length)
                    throw Error(dimsAt, $"tensor_infos[{i}].dims", $"tensor '{name}' needs {byteSize} bytes of data, more than the whole file ({length} bytes)");

                long offsetAt = Position;
                ulong relativeOffset = ReadUInt64(new Field("tensor_infos", i, ".offset"));
                if (relativeOffset > (ulong)length)
                    throw Error(offsetAt, $"tensor_infos[{i}].offset", $"tensor '{name}' data offset {relativeOffset} lies beyond the end of the file ({length} bytes)");
                if (relativeOffset % alignment != 0)
                    throw Error(offsetAt, $"tensor_infos[{i}].offset", $"tensor '{name}' data offset {relativeOffset} is not a multiple of the alignment {alignment}");

                var info = new TensorInfo(name, typeInfo.Type, dims[..(int)nDims].ToArray());
                tensors.Add((info, (long)relativeOffset, offsetAt));
            }

            // ---- data section ----
            long infosEnd = Position;
            long dataSectionOffset = TensorPadding.AlignUp(infosEnd, alignment);
            var result = new GgufTensor[count];
            for (int i = 0; i < count; i++)
            {
                var (info, rel, offsetAt) = tensors[i];
                long fileOffset = dataSectionOffset + rel; // both <= length, so no overflow
                if (fileOffset > length || info.ByteSize > length - fileOffset)
                    throw Error(offsetAt, $"tensor_infos[{i}].offset", $"tensor '{info.Name}' data [{fileOffset}, {fileOffset + info.ByteSize}) extends past the end of the file ({length} bytes)");
                result[i] = new GgufTensor(i, info, rel, fileOffset);
            }
            CheckNoOverlap(result, tensors);

            return new GgufFile(path, version, length, alignment, dataSectionOffset, metadata, result);
        }

        /// <summary>Two tensors sharing bytes would make any later in-place write or padding check unsound.</summary>
        private void CheckNoOverlap(GgufTensor[] result, List<(TensorInfo Info, long RelativeOffset, long OffsetFieldAt)> infos)
        {
            if (result.Length < 2) return;
            var byOffset = (GgufTensor[])result.Clone();
            Array.Sort(byOffset, static (a, b) => a.FileOffset != b.FileOffset ? a.FileOffset.CompareTo(b.FileOffset) : a.Index.CompareTo(b.Index));
            for (int k = 1; k < byOffset.Length; k++)
            {
                var prev = byOffset[k - 1];
                var cur = byOffset[k];
                if (cur.FileOffset < prev.FileEnd)
                    throw Error(infos[cur.Index].OffsetFieldAt, $"tensor_infos[{cur.Index}].offset",
                        $"tensor '{cur.Name}' data [{cur.FileOffset}, {cur.FileEnd}) overlaps tensor '{prev.Name}' data [{prev.FileOffset}, {prev.FileEnd})");
            }
        }

        // ---- values ----

        private GgufValue ReadValue(GgufValueType type, string field, string? key, int depth)
        {
            switch (type)
            {
                case GgufValueType.String:
                    return GgufValue.FromString(ReadString(field), key);
                case GgufValueType.Array:
                    return ReadArray(field, key, depth + 1);
                case GgufValueType.Bool:
                {
                    long at = Position;
                    byte b = ReadByte(field);
                    if (b > 1) throw Error(at, field, $"bool value is {b}; only 0 and 1 are valid");
                    return GgufValue.FromBits(type, b, key);
                }
                default:
                    return GgufValue.FromBits(type, ReadScalarBits(type, field), key);
            }
        }

        private ulong ReadScalarBits(GgufValueType type, Field field)
        {
            int size = GgufValueTypes.FixedSize(type);
            Ensure(size, field);
            var s = _buffer.AsSpan(_start, size);
            _start += size;
            return type switch
            {
                GgufValueType.UInt8 => s[0],
                GgufValueType.Int8 => (ulong)(long)(sbyte)s[0],
                GgufValueType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(s),
                GgufValueType.Int16 => (ulong)(long)BinaryPrimitives.ReadInt16LittleEndian(s),
                GgufValueType.UInt32 or GgufValueType.Float32 => BinaryPrimitives.ReadUInt32LittleEndian(s),
                GgufValueType.Int32 => (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(s),
                _ => BinaryPrimitives.ReadUInt64LittleEndian(s), // UInt64, Int64, Float64: stored as raw 64 bits
            };
        }

        private GgufValue ReadArray(string field, string? key, int depth)
        {
            long elementTypeAt = Position;
            uint rawElementType = ReadUInt32(field + ".element_type");
            if (!GgufValueTypes.IsKnown(rawElementType))
                throw Error(elementTypeAt, field + ".element_type", $"unknown array element type {rawElementType} (known types are 0..12)");
            var elementType = (GgufValueType)rawElementType;
            if (elementType == GgufValueType.Array && depth >= MaxArrayDepth)
                throw Error(elementTypeAt, field + ".element_type", $"arrays are nested more than {MaxArrayDepth} deep");

            long countAt = Position;
            ulong count = ReadUInt64(field + ".count");
            int minSize = GgufValueTypes.MinEncodedSize(elementType);
            if (count > (ulong)(Remaining / minSize))
                throw Error(countAt, field + ".count", $"array of {count} {elementType} elements needs at least {minSize} bytes each, but only {Remaining} bytes remain in the file");
            if (count > (ulong)Array.MaxLength)
                throw Error(countAt, field + ".count", $"array of {count} elements is larger than the largest array .NET can hold ({Array.MaxLength})");
            int n = (int)count;

            switch (elementType)
            {
                case GgufValueType.String:
                {
                    var strings = n == 0 ? [] : new string[n];
                    for (int j = 0; j < n; j++) strings[j] = ReadString(new Field(field, j));
                    return GgufValue.FromStorage(elementType, strings, key);
                }
                case GgufValueType.Array:
                {
                    var items = n == 0 ? [] : new GgufValue[n];
                    for (int j = 0; j < n; j++)
                    {
                        string itemField = $"{field}[{j}]";
                        items[j] = ReadArray(itemField, key: null, depth + 1);
                    }
                    return GgufValue.FromStorage(elementType, items, key);
                }
                case GgufValueType.Bool:
                {
                    long at = Position;
                    var bools = new bool[n];
                    ReadInto(MemoryMarshal.AsBytes(bools.AsSpan()), field);
                    var raw = MemoryMarshal.AsBytes(bools.AsSpan());
                    for (int j = 0; j < raw.Length; j++)
                        if (raw[j] > 1) throw Error(at + j, $"{field}[{j}]", $"bool value is {raw[j]}; only 0 and 1 are valid");
                    return GgufValue.FromStorage(elementType, bools, key);
                }
                default:
                    return GgufValue.FromStorage(elementType, ReadFixedArray(elementType, n, field), key);
            }
        }

        private Array ReadFixedArray(GgufValueType type, int n, string field)
        {
            switch (type)
            {
                case GgufValueType.UInt8: { var a = new byte[n]; ReadInto(a, field); return a; }
                case GgufValueType.Int8: { var a = new sbyte[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); return a; }
                case GgufValueType.UInt16: { var a = new ushort[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(a.AsSpan()); return a; }
                case GgufValueType.Int16: { var a = new short[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(MemoryMarshal.Cast<short, ushort>(a.AsSpan())); return a; }
                case GgufValueType.UInt32: { var a = new uint[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(a.AsSpan()); return a; }
                case GgufValueType.Int32: { var a = new int[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(MemoryMarshal.Cast<int, uint>(a.AsSpan())); return a; }
                case GgufValueType.Float32: { var a = new float[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(MemoryMarshal.Cast<float, uint>(a.AsSpan())); return a; }
                case GgufValueType.UInt64: { var a = new ulong[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(a.AsSpan()); return a; }
                case GgufValueType.Int64: { var a = new long[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(MemoryMarshal.Cast<long, ulong>(a.AsSpan())); return a; }
                case GgufValueType.Float64: { var a = new double[n]; ReadInto(MemoryMarshal.AsBytes(a.AsSpan()), field); FromLittleEndian(MemoryMarshal.Cast<double, ulong>(a.AsSpan())); return a; }
                default: throw new InvalidOperationException($"{type} is not a fixed-size type");
            }
        }

        // The file is little-endian; only a big-endian host needs to swap.
        private static void FromLittleEndian(Span<ushort> s) { if (!BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(s, s); }
        private static void FromLittleEndian(Span<uint> s) { if (!BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(s, s); }
        private static void FromLittleEndian(Span<ulong> s) { if (!BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(s, s); }

        // ---- primitives ----

        private byte ReadByte(Field field)
        {
            Ensure(1, field);
            return _buffer[_start++];
        }

        private uint ReadUInt32(Field field)
        {
            Ensure(4, field);
            uint v = BinaryPrimitives.ReadUInt32LittleEndian(_buffer.AsSpan(_start, 4));
            _start += 4;
            return v;
        }

        private ulong ReadUInt64(Field field)
        {
            Ensure(8, field);
            ulong v = BinaryPrimitives.ReadUInt64LittleEndian(_buffer.AsSpan(_start, 8));
            _start += 8;
            return v;
        }

        private string ReadString(Field field)
        {
            long lengthAt = Position;
            ulong byteLength = ReadUInt64(field);
            if (byteLength > (ulong)Remaining)
                throw Error(lengthAt, field.ToString(), $"string length {byteLength} runs past the end of the file ({Remaining} bytes remain after the length)");
            if (byteLength > int.MaxValue)
                throw Error(lengthAt, field.ToString(), $"string length {byteLength} exceeds the largest supported string ({int.MaxValue} bytes)");
            int n = (int)byteLength;
            if (n == 0) return string.Empty;
            if (n <= BufferSize)
            {
                Ensure(n, field);
                string s = Utf8.GetString(_buffer, _start, n);
                _start += n;
                return s;
            }
            byte[] rented = ArrayPool<byte>.Shared.Rent(n);
            try
            {
                ReadInto(rented.AsSpan(0, n), field);
                return Utf8.GetString(rented, 0, n);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }

        /// <summary>Makes <paramref name="count"/> (≤ buffer size) bytes available at <c>_buffer[_start]</c>.</summary>
        private void Ensure(int count, Field field)
        {
            if (_end - _start >= count) return;
            if (count > Remaining)
                throw Error(Position, field.ToString(), $"needs {count} bytes but the file ends at byte {length} ({Remaining} bytes remain)");
            // Slide the unread tail to the front, then top up from the stream (never past the declared length).
            int unread = _end - _start;
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, unread);
            _bufferFileOffset += _start;
            _start = 0;
            _end = unread;
            while (_end < count)
            {
                int want = (int)Math.Min(_buffer.Length - _end, length - (_bufferFileOffset + _end));
                int got = stream.Read(_buffer, _end, want);
                if (got <= 0)
                    throw Error(Position, field.ToString(), $"the stream ended at byte {_bufferFileOffset + _end}, before the declared length {length}");
                _end += got;
            }
        }

        /// <summary>Fills <paramref name="destination"/> from the buffer and then straight from the stream
        /// (large arrays bypass the buffer).</summary>
        private void ReadInto(Span<byte> destination, Field field)
        {
            if (destination.Length > Remaining)
                throw Error(Position, field.ToString(), $"needs {destination.Length} bytes but the file ends at byte {length} ({Remaining} bytes remain)");
            int fromBuffer = Math.Min(_end - _start, destination.Length);
            _buffer.AsSpan(_start, fromBuffer).CopyTo(destination);
            _start += fromBuffer;
            var rest = destination[fromBuffer..];
            if (rest.IsEmpty) return;
            if (rest.Length < BufferSize / 2)
            {
                Ensure(rest.Length, field);
                _buffer.AsSpan(_start, rest.Length).CopyTo(rest);
                _start += rest.Length;
                return;
            }
            // Buffer is empty here; read directly and move the buffer window past what was read.
            long at = Position;
            int done = 0;
            while (done < rest.Length)
            {
                int got = stream.Read(rest[done..]);
                if (got <= 0)
                    throw Error(at, field.ToString(), $"the stream ended at byte {at + done}, before the declared length {length}");
                done += got;
            }
            _bufferFileOffset = at + rest.Length;
            _start = _end = 0;
        }

        private GgufFormatException Error(long offset, string field, string problem) => new(path, offset, field, problem);
    }
}
