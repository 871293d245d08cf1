using System.Globalization;
using System.Text;

namespace PluginEngine.Core.Chat.Jinja;

/// <summary>A name or key that does not exist: renders as "", is falsy, iterates as empty, fails <c>is defined</c>.</summary>
public sealed class Undefined(string name)
{
    public string Name { get; } = name;
    public override string ToString() => "";
}

/// <summary><c>namespace(...)</c>: a mutable object whose attributes survive loop scopes (<c>set ns.x = …</c>).</summary>
public sealed class JinjaNamespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>A callable value (global function, macro, bound method).</summary>
public delegate object? JinjaCallable(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>
/// Python semantics for the values a template sees: null (none), bool, long, double, string, lists
/// (<see cref="List{T}"/> of object), mappings (<see cref="Dictionary{TKey,TValue}"/> string → object), namespaces, callables.
/// </summary>
public static class JinjaValues
{
    public static bool IsTruthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        Dictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    /// <summary>Python's str() of a value (what <c>{{ }}</c> and <c>|string</c> print).</summary>
    public static string ToStr(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatDouble(d),
        _ => Repr(v),
    };

    /// <summary>Python's repr() (strings quoted; used inside lists and dicts).</summary>
    public static string Repr(object? v)
    {
        switch (v)
        {
            case string s:
                var q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
                var sb = new StringBuilder().Append(q);
                foreach (char c in s)
                {
                    if (c == q || c == '\\') sb.Append('\\').Append(c);
                    else if (c == '\n') sb.Append("\\n");
                    else if (c == '\t') sb.Append("\\t");
                    else if (c == '\r') sb.Append("\\r");
                    else sb.Append(c);
                }
                return sb.Append(q).ToString();
            case List<object?> list:
                return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case Dictionary<string, object?> dict:
                return "{" + string.Join(", ", dict.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case JinjaNamespace ns:
                return "<Namespace " + string.Join(", ", ns.Attributes.Select(kv => kv.Key + "=" + Repr(kv.Value))) + ">";
            case Undefined:
                return "Undefined";
            default:
                return ToStr(v);
        }
    }

    private static string FormatDouble(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        string s = d.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.') || s.Contains('E') ? s : s + ".0";
    }

    public static string TypeName(object? v) => v switch
    {
        null => "none",
        Undefined u => $"undefined ('{u.Name}')",
        bool => "boolean",
        long => "integer",
        double => "float",
        string => "string",
        List<object?> => "list",
        Dictionary<string, object?> => "mapping",
        JinjaNamespace => "namespace",
        JinjaCallable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>JSON as Python's json.dumps writes it (", " and ": " separators, keys in insertion order, non-ASCII kept).</summary>
    public static string ToJson(object? v, int? indent = null, bool sortKeys = false)
    {
        var sb = new StringBuilder();
        WriteJson(sb, v, indent, sortKeys, 0);
        return sb.ToString();
    }

    private static void WriteJson(StringBuilder sb, object? v, int? indent, bool sortKeys, int depth)
    {
        void NewLine(int d)
        {
            if (indent is { } n) sb.Append('\n').Append(' ', n * d);
        }
        string itemSeparator = indent is null ? ", " : ",";
        switch (v)
        {
            case null or Undefined: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsFinite(d) ? FormatDouble(d) : double.IsNaN(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity"); break;
            case string s: WriteJsonString(sb, s); break;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(itemSeparator);
                    NewLine(depth + 1);
                    WriteJson(sb, list[i], indent, sortKeys, depth + 1);
                }
                NewLine(depth);
                sb.Append(']');
                break;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                var pairs = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                for (int i = 0; i < pairs.Count; i++)
                {
                    if (i > 0) sb.Append(itemSeparator);
                    NewLine(depth + 1);
                    WriteJsonString(sb, pairs[i].Key);
                    sb.Append(": ");
                    WriteJson(sb, pairs[i].Value, indent, sortKeys, depth + 1);
                }
                NewLine(depth);
                sb.Append('}');
                break;
            case JinjaNamespace ns:
                WriteJson(sb, ns.Attributes, indent, sortKeys, depth);
                break;
            default:
                throw new TemplateException($"chat template: cannot convert a {TypeName(v)} to JSON");
        }
    }

    private static void WriteJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Converts CLR data (strings, numbers, bools, dictionaries, enumerables) into template values.</summary>
    public static object? FromClr(object? v) => v switch
    {
        null or string or bool or long or double or Undefined or JinjaNamespace or JinjaCallable => v,
        int i => (long)i,
        uint u => (long)u,
        short s => (long)s,
        byte b => (long)b,
        ulong ul => (long)ul,
        float f => (double)f,
        decimal m => (double)m,
        List<object?> list when list.All(x => x is null or string or bool or long or double or List<object?> or Dictionary<string, object?>) => list,
        Dictionary<string, object?> dict => dict,
        System.Collections.IDictionary dict => dict.Keys.Cast<object>().ToDictionary(k => Convert.ToString(k, CultureInfo.InvariantCulture)!, k => FromClr(dict[k])),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(FromClr).ToList(),
        _ => Convert.ToString(v, CultureInfo.InvariantCulture),
    };
}
