namespace PluginEngine.Abstractions;

/// <summary>
/// What a backend needs to know about one tensor: its name, element type and shape.
/// Shapes follow GGUF/ggml order: <c>Dims[0]</c> (ne0) is the row length, the fastest-varying
/// dimension; a matrix of <c>ne1</c> rows of <c>ne0</c> elements is <c>[ne0, ne1]</c>.
/// </summary>
public sealed class TensorInfo
{
    /// <summary>Most dimensions a tensor may have (as in GGML).</summary>
    public const int MaxDims = 4;

    /// <summary>Creates a description; validates that the shape is storable in the type.</summary>
    public TensorInfo(string name, GgmlType type, IReadOnlyList<long> dims)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(dims);
        if (dims.Count is 0 or > MaxDims) throw new ArgumentException($"tensor '{name}': {dims.Count} dimensions (1..{MaxDims} allowed)", nameof(dims));
        Name = name;
        Type = type;
        TypeInfo = GgmlTypes.Get(type);
        Dims = dims.ToArray();
        long elements = 1;
        foreach (long d in Dims)
        {
            if (d <= 0) throw new ArgumentException($"tensor '{name}': dimension {d} must be positive", nameof(dims));
            elements = checked(elements * d);
        }
        ElementCount = elements;
        RowCount = elements / Dims[0];
        RowBytes = TypeInfo.RowSize(Dims[0]);
        ByteSize = checked(RowBytes * RowCount);
    }

    /// <summary>Tensor name as in the GGUF file (e.g. <c>blk.0.attn_q.weight</c>).</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public GgmlType Type { get; }

    /// <summary>Block layout of <see cref="Type"/>.</summary>
    public GgmlTypeInfo TypeInfo { get; }

    /// <summary>Dimensions, ne0 first.</summary>
    public IReadOnlyList<long> Dims { get; }

    /// <summary>Row length in elements (ne0).</summary>
    public long RowLength => Dims[0];

    /// <summary>Number of rows (product of every dimension but ne0).</summary>
    public long RowCount { get; }

    /// <summary>Total number of elements.</summary>
    public long ElementCount { get; }

    /// <summary>Bytes of one row.</summary>
    public long RowBytes { get; }

    /// <summary>Bytes of the tensor's data (without any backend padding).</summary>
    public long ByteSize { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Dims)}]";
}

/// <summary>Row-padding arithmetic shared by backends whose quantized kernels read whole padded rows.</summary>
public static class TensorPadding
{
    /// <summary>
    /// Extra bytes a kernel that processes rows in chunks of <paramref name="rowPaddingElements"/>
    /// may read past the last row of <paramref name="tensor"/>: for a quantized tensor whose row
    /// length is not a multiple of the padding, <c>rowSize(type, pad - ne0 % pad)</c>; otherwise 0.
    /// These bytes (the "slide") must read as zero.
    /// </summary>
    public static long SlideBytes(TensorInfo tensor, int rowPaddingElements)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (rowPaddingElements <= 0) throw new ArgumentOutOfRangeException(nameof(rowPaddingElements));
        if (!tensor.TypeInfo.IsQuantized) return 0;
        long rem = tensor.RowLength % rowPaddingElements;
        return rem == 0 ? 0 : tensor.TypeInfo.RowSize(rowPaddingElements - rem);
    }

    /// <summary>Rounds <paramref name="value"/> up to a multiple of <paramref name="alignment"/> (a power of two or any positive number).</summary>
    public static long AlignUp(long value, long alignment)
    {
        if (alignment <= 0) throw new ArgumentOutOfRangeException(nameof(alignment));
        long r = value % alignment;
        return r == 0 ? value : checked(value + alignment - r);
    }

    /// <summary>Rounds <paramref name="value"/> down to a multiple of <paramref name="alignment"/>.</summary>
    public static long AlignDown(long value, long alignment)
    {
        if (alignment <= 0) throw new ArgumentOutOfRangeException(nameof(alignment));
        return value - value % alignment;
    }
}
