namespace PluginEngine.Abstractions;

/// <summary>
/// Tensor element types, numbered exactly as GGUF stores them (the <c>ggml_type</c> values).
/// Gaps in the numbering (4, 5, 31–33, …) are types GGUF retired; the reader rejects them.
/// </summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

/// <summary>Storage layout of one <see cref="GgmlType"/>: elements are stored in blocks of
/// <see cref="BlockSize"/> elements taking <see cref="BytesPerBlock"/> bytes each.</summary>
/// <param name="Type">The type described.</param>
/// <param name="BlockSize">Elements per block (1 for plain types, 32 for Q4_0/Q8_0…, 256 for K-quants).</param>
/// <param name="BytesPerBlock">Bytes one block occupies.</param>
/// <param name="IsQuantized">True for block-quantized types (these are the ones that need row slides).</param>
public readonly record struct GgmlTypeInfo(GgmlType Type, int BlockSize, int BytesPerBlock, bool IsQuantized)
{
    /// <summary>Bytes of a row of <paramref name="elements"/> elements. Throws when the count is not a
    /// whole number of blocks, because such a row cannot be stored in this type.</summary>
    public long RowSize(long elements)
    {
        if (elements < 0) throw new ArgumentOutOfRangeException(nameof(elements), elements, "element count must be non-negative");
        if (elements % BlockSize != 0)
            throw new ArgumentException($"{Type} stores elements in blocks of {BlockSize}; a row of {elements} elements is not a whole number of blocks", nameof(elements));
        return checked(elements / BlockSize * BytesPerBlock);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Type} (block {BlockSize}, {BytesPerBlock} B)";
}

/// <summary>The table of every type's block layout, as GGUF defines them.</summary>
public static class GgmlTypes
{
    private static readonly GgmlTypeInfo?[] Table = Build();

    private static GgmlTypeInfo?[] Build()
    {
        var t = new GgmlTypeInfo?[40];
        void Add(GgmlType type, int block, int bytes, bool quantized) => t[(int)type] = new GgmlTypeInfo(type, block, bytes, quantized);
        Add(GgmlType.F32, 1, 4, false);
        Add(GgmlType.F16, 1, 2, false);
        Add(GgmlType.BF16, 1, 2, false);
        Add(GgmlType.F64, 1, 8, false);
        Add(GgmlType.I8, 1, 1, false);
        Add(GgmlType.I16, 1, 2, false);
        Add(GgmlType.I32, 1, 4, false);
        Add(GgmlType.I64, 1, 8, false);
        Add(GgmlType.Q4_0, 32, 2 + 16, true);            // f16 d, 32 x 4-bit
        Add(GgmlType.Q4_1, 32, 2 + 2 + 16, true);        // f16 d, f16 m, 32 x 4-bit
        Add(GgmlType.Q5_0, 32, 2 + 4 + 16, true);        // f16 d, 32 high bits, 32 x 4-bit
        Add(GgmlType.Q5_1, 32, 2 + 2 + 4 + 16, true);
        Add(GgmlType.Q8_0, 32, 2 + 32, true);            // f16 d, 32 x int8
        Add(GgmlType.Q8_1, 32, 2 + 2 + 32, true);        // f16 d, f16 sum, 32 x int8
        Add(GgmlType.Q2_K, 256, 16 + 64 + 2 + 2, true);  // scales, 2-bit quants, f16 d, f16 dmin
        Add(GgmlType.Q3_K, 256, 32 + 64 + 12 + 2, true); // high-bit mask, 2-bit quants, 6-bit scales, f16 d
        Add(GgmlType.Q4_K, 256, 2 + 2 + 12 + 128, true); // f16 d, f16 dmin, 6-bit scales/mins, 4-bit quants
        Add(GgmlType.Q5_K, 256, 2 + 2 + 12 + 32 + 128, true);
        Add(GgmlType.Q6_K, 256, 128 + 64 + 16 + 2, true); // low 4 bits, high 2 bits, int8 scales, f16 d
        Add(GgmlType.Q8_K, 256, 4 + 256 + 32, true);      // f32 d, 256 x int8, 16 x int16 block sums
        Add(GgmlType.IQ2_XXS, 256, 66, true);
        Add(GgmlType.IQ2_XS, 256, 74, true);
        Add(GgmlType.IQ3_XXS, 256, 98, true);
        Add(GgmlType.IQ1_S, 256, 50, true);
        Add(GgmlType.IQ4_NL, 32, 18, true);
        Add(GgmlType.IQ3_S, 256, 110, true);
        Add(GgmlType.IQ2_S, 256, 82, true);
        Add(GgmlType.IQ4_XS, 256, 136, true);
        Add(GgmlType.IQ1_M, 256, 56, true);
        Add(GgmlType.TQ1_0, 256, 54, true);
        Add(GgmlType.TQ2_0, 256, 66, true);
        Add(GgmlType.MXFP4, 32, 17, true);
        return t;
    }

    /// <summary>True when <paramref name="rawType"/> is a type id GGUF defines (and whose layout is known here).</summary>
    public static bool IsKnown(uint rawType) => rawType < Table.Length && Table[rawType] is not null;

    /// <summary>Layout of <paramref name="type"/>; throws for ids GGUF does not define.</summary>
    public static GgmlTypeInfo Get(GgmlType type)
        => (uint)type < Table.Length && Table[(int)type] is { } info
            ? info
            : throw new ArgumentOutOfRangeException(nameof(type), (uint)type, "not a GGUF tensor type");

    /// <summary>Every known type, in id order.</summary>
    public static IEnumerable<GgmlTypeInfo> All => Table.Where(t => t is not null).Select(t => t!.Value);

    /// <summary>Bytes of a row of <paramref name="elements"/> elements of <paramref name="type"/>.</summary>
    public static long RowSize(GgmlType type, long elements) => Get(type).RowSize(elements);
}
