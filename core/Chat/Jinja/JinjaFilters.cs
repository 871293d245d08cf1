using System.Globalization;
using static PluginEngine.Core.Chat.Jinja.JinjaValues;

namespace PluginEngine.Core.Chat.Jinja;

/// <summary>The filters (<c>x | name(args)</c>) chat templates call, with Jinja's and Python's semantics.</summary>
internal static class JinjaFilters
{
    public static bool AreEqual(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (Undefined, Undefined) => true,
        (string x, string y) => string.Equals(x, y, StringComparison.Ordinal),
        (bool x, bool y) => x == y,
        (long or double, long or double) => Convert.ToDouble(a, CultureInfo.InvariantCulture) == Convert.ToDouble(b, CultureInfo.InvariantCulture),
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => AreEqual(p.First, p.Second)),
        (Dictionary<string, object?> x, Dictionary<string, object?> y) => x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var v) && AreEqual(kv.Value, v)),
        _ => ReferenceEquals(a, b),
    };

    public static object? Apply(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs,
        Func<string, TemplateException> error, Func<string, object?, List<object?>, bool> test)
    {
        object? Arg(int i, string key, object? fallback = null) => i < args.Count ? args[i] : kwargs.TryGetValue(key, out var given) ? given : fallback;
        string Str(string what) => value is string s ? s : value is Undefined ? "" : throw error($"filter '{what}' needs a string, got a {TypeName(value)}");

        switch (name)
        {
            case "trim" or "strip": return Str(name).Trim(ArgChars(Arg(0, "chars")));
            case "lower": return Str(name).ToLowerInvariant();
            case "upper": return Str(name).ToUpperInvariant();
            case "capitalize": { var s = Str(name); return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(); }
            case "title": return JinjaMethods.Title(Str(name));
            case "string": return ToStr(value);
            case "safe": return value;
            case "length" or "count":
                return value switch
                {
                    string s => (long)s.Length,
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> map => (long)map.Count,
                    Undefined => 0L,
                    _ => throw error($"filter 'length' needs a string, list or mapping, got a {TypeName(value)}"),
                };
            case "tojson":
            {
                var indent = Arg(0, "indent");
                return ToJson(value, indent is long n ? (int)n : null, IsTruthy(Arg(1, "sort_keys", false)));
            }
            case "first": return value is List<object?> { Count: > 0 } fl ? fl[0] : value is string { Length: > 0 } fs ? fs[0].ToString() : new Undefined("first");
            case "last": return value is List<object?> { Count: > 0 } ll ? ll[^1] : value is string { Length: > 0 } ls ? ls[^1].ToString() : new Undefined("last");
            case "list": return value switch { List<object?> l => l.ToList(), string s => s.Select(c => (object?)c.ToString()).ToList(), Dictionary<string, object?> map => map.Keys.Cast<object?>().ToList(), Undefined => new List<object?>(), _ => throw error($"filter 'list' cannot convert a {TypeName(value)}") };
            case "reverse": return value switch { List<object?> l => Enumerable.Reverse(l).ToList(), string s => new string(s.Reverse().ToArray()), _ => throw error($"filter 'reverse' needs a list or string, got a {TypeName(value)}") };
            case "join":
            {
                string separator = Arg(0, "d", "") is string sep ? sep : "";
                var attribute = Arg(1, "attribute") as string;
                var items = value is List<object?> l ? l : value is string s ? s.Select(c => (object?)c.ToString()).ToList() : throw error($"filter 'join' needs a list, got a {TypeName(value)}");
                return string.Join(separator, items.Select(x => ToStr(attribute is null ? x : Attribute(x, attribute))));
            }
            case "default" or "d":
            {
                var fallback = Arg(0, "default_value", "");
                bool boolean = IsTruthy(Arg(1, "boolean", false));
                return value is Undefined || boolean && !IsTruthy(value) ? fallback : value;
            }
            case "replace":
            {
                var s = Str(name);
                string old = ToStr(Arg(0, "old")), replacement = ToStr(Arg(1, "new"));
                return old.Length == 0 ? s : s.Replace(old, replacement, StringComparison.Ordinal);
            }
            case "int": return value switch { long l => l, double dbl => (long)dbl, bool b => b ? 1L : 0L, string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) => r, string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var dd) => (long)dd, _ => Arg(0, "default", 0L) };
            case "float": return value switch { long l => (double)l, double dbl => dbl, string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var r) => r, _ => Arg(0, "default", 0.0) };
            case "abs": return value switch { long l => Math.Abs(l), double dbl => Math.Abs(dbl), _ => throw error($"filter 'abs' needs a number, got a {TypeName(value)}") };
            case "round":
            {
                long digits = Arg(0, "precision", 0L) is long p ? p : 0;
                double v = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                return Math.Round(v, (int)digits, MidpointRounding.ToEven);
            }
            case "indent":
            {
                var s = Str(name);
                var width = Arg(0, "width", 4L);
                string pad = width is string w ? w : new string(' ', (int)(width is long n ? n : 4));
                bool first = IsTruthy(Arg(1, "first", false)), blank = IsTruthy(Arg(2, "blank", false));
                var lines = s.Split('\n');
                for (int i = 0; i < lines.Length; i++)
                    if ((i > 0 || first) && (blank || lines[i].Length > 0)) lines[i] = pad + lines[i];
                return string.Join('\n', lines);
            }
            case "items": return value is Dictionary<string, object?> itemsOf ? itemsOf.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList() : value is Undefined ? new List<object?>() : throw error($"filter 'items' needs a mapping, got a {TypeName(value)}");
            case "dictsort": return value is Dictionary<string, object?> ds ? ds.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList() : throw error($"filter 'dictsort' needs a mapping, got a {TypeName(value)}");
            case "unique":
            {
                var result = new List<object?>();
                foreach (var x in AsList(value, name, error)) if (!result.Any(r => AreEqual(r, x))) result.Add(x);
                return result;
            }
            case "sort":
            {
                var attribute = Arg(2, "attribute") as string;
                bool reverse = IsTruthy(Arg(0, "reverse", false));
                var sorted = AsList(value, name, error).OrderBy(x => attribute is null ? x : Attribute(x, attribute), Comparer<object?>.Create(CompareValues)).ToList();
                if (reverse) sorted.Reverse();
                return sorted;
            }
            case "map":
            {
                var items = AsList(value, name, error);
                if (kwargs.TryGetValue("attribute", out var attr)) return items.Select(x => Attribute(x, ToStr(attr))).ToList();
                if (args.Count > 0 && args[0] is string filter)
                    return items.Select(x => Apply(filter, x, args.Skip(1).ToList(), [], error, test)).ToList();
                throw error("filter 'map' needs attribute='name' or a filter name");
            }
            case "selectattr" or "rejectattr":
            {
                if (args.Count == 0 || args[0] is not string attr) throw error($"filter '{name}' needs an attribute name");
                bool keep = name == "selectattr";
                var testName = args.Count > 1 ? ToStr(args[1]) : null;
                var testArgs = args.Skip(2).ToList();
                return AsList(value, name, error).Where(x =>
                {
                    var a = Attribute(x, attr);
                    bool passed = testName is null ? IsTruthy(a) : test(testName, a, testArgs);
                    return passed == keep;
                }).ToList();
            }
            case "select" or "reject":
            {
                bool keep = name == "select";
                var testName = args.Count > 0 ? ToStr(args[0]) : null;
                var testArgs = args.Skip(1).ToList();
                return AsList(value, name, error).Where(x => (testName is null ? IsTruthy(x) : test(testName, x, testArgs)) == keep).ToList();
            }
            case "sum": return AsList(value, name, error).Aggregate((object?)0L, (acc, x) => acc is long a && x is long b ? a + b : Convert.ToDouble(acc, CultureInfo.InvariantCulture) + Convert.ToDouble(x, CultureInfo.InvariantCulture));
            case "min" or "max":
            {
                var items = AsList(value, name, error);
                if (items.Count == 0) return new Undefined(name);
                var ordered = items.OrderBy(x => x, Comparer<object?>.Create(CompareValues));
                return name == "min" ? ordered.First() : ordered.Last();
            }
            case "batch" or "slice": throw error($"filter '{name}' is not supported");
            case "wordcount": return (long)Str(name).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            default:
                throw error($"unknown filter '{name}'");
        }
    }

    private static char[]? ArgChars(object? chars) => chars is string s ? s.ToCharArray() : null;

    private static List<object?> AsList(object? value, string filter, Func<string, TemplateException> error) => value switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => s.Select(c => (object?)c.ToString()).ToList(),
        Undefined => [],
        _ => throw error($"filter '{filter}' needs a list, got a {TypeName(value)}"),
    };

    private static object? Attribute(object? item, string path)
    {
        object? current = item;
        foreach (var part in path.Split('.'))
        {
            current = current switch
            {
                Dictionary<string, object?> d => d.TryGetValue(part, out var v) ? v : new Undefined(part),
                JinjaNamespace ns => ns.Attributes.TryGetValue(part, out var v) ? v : new Undefined(part),
                List<object?> l when int.TryParse(part, out int i) && i < l.Count => l[i],
                _ => new Undefined(part),
            };
        }
        return current;
    }

    private static int CompareValues(object? a, object? b)
    {
        if (a is long or double && b is long or double)
            return Convert.ToDouble(a, CultureInfo.InvariantCulture).CompareTo(Convert.ToDouble(b, CultureInfo.InvariantCulture));
        return string.CompareOrdinal(ToStr(a), ToStr(b));
    }
}

/// <summary>Python methods of strings and dicts that templates call (<c>content.strip()</c>, <c>message.get('x')</c>, …).</summary>
internal static class JinjaMethods
{
    public static JinjaCallable? Bind(object? target, string name) => target switch
    {
        string s => StringMethod(s, name),
        Dictionary<string, object?> d => DictMethod(d, name),
        List<object?> l => ListMethod(l, name),
        _ => null,
    };

    private static char[]? Chars(List<object?> args) => args.Count > 0 && args[0] is string c ? c.ToCharArray() : null;

    private static JinjaCallable? StringMethod(string s, string name) => name switch
    {
        "strip" => (a, _) => s.Trim(Chars(a)),
        "lstrip" => (a, _) => s.TrimStart(Chars(a)),
        "rstrip" => (a, _) => s.TrimEnd(Chars(a)),
        "upper" => (_, _) => s.ToUpperInvariant(),
        "lower" => (_, _) => s.ToLowerInvariant(),
        "title" => (_, _) => Title(s),
        "capitalize" => (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
        "startswith" => (a, _) => a.Count > 0 && (a[0] is List<object?> options ? options.Any(o => s.StartsWith(ToStr(o), StringComparison.Ordinal)) : s.StartsWith(ToStr(a[0]), StringComparison.Ordinal)),
        "endswith" => (a, _) => a.Count > 0 && (a[0] is List<object?> options ? options.Any(o => s.EndsWith(ToStr(o), StringComparison.Ordinal)) : s.EndsWith(ToStr(a[0]), StringComparison.Ordinal)),
        "replace" => (a, _) =>
        {
            string old = ToStr(a[0]), repl = ToStr(a[1]);
            if (a.Count > 2 && a[2] is long count && count >= 0)
            {
                var result = s;
                int at = 0;
                for (long i = 0; i < count && old.Length > 0; i++)
                {
                    int found = result.IndexOf(old, at, StringComparison.Ordinal);
                    if (found < 0) break;
                    result = result[..found] + repl + result[(found + old.Length)..];
                    at = found + repl.Length;
                }
                return result;
            }
            return old.Length == 0 ? s : s.Replace(old, repl, StringComparison.Ordinal);
        },
        "split" => (a, _) =>
        {
            if (a.Count == 0 || a[0] is null) return s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Cast<object?>().ToList();
            var parts = s.Split(ToStr(a[0]));
            if (a.Count > 1 && a[1] is long max && max >= 0 && parts.Length > max + 1)
                parts = [.. parts[..(int)max], string.Join(ToStr(a[0]), parts[(int)max..])];
            return parts.Cast<object?>().ToList();
        },
        "rsplit" => (a, _) => (a.Count == 0 || a[0] is null ? s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries) : s.Split(ToStr(a[0]))).Cast<object?>().ToList(),
        "find" => (a, _) => (long)s.IndexOf(ToStr(a[0]), StringComparison.Ordinal),
        "count" => (a, _) => { string sub = ToStr(a[0]); if (sub.Length == 0) return (long)s.Length + 1; long n = 0; for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++; return n; },
        "join" => (a, _) => string.Join(s, a.Count > 0 && a[0] is List<object?> l ? l.Select(ToStr) : []),
        "isdigit" => (_, _) => s.Length > 0 && s.All(char.IsDigit),
        "isspace" => (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace),
        "format" => (a, _) =>
        {
            int next = 0;
            var sb = new System.Text.StringBuilder();
            for (int i = 0; i < s.Length; i++)
            {
                if (s[i] == '{' && i + 1 < s.Length && s[i + 1] == '}') { sb.Append(next < a.Count ? ToStr(a[next++]) : ""); i++; }
                else sb.Append(s[i]);
            }
            return sb.ToString();
        },
        _ => null,
    };

    private static JinjaCallable? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "get" => (a, _) => a.Count > 0 && a[0] is string key && d.TryGetValue(key, out var v) ? v : a.Count > 1 ? a[1] : null,
        "items" => (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
        "keys" => (_, _) => d.Keys.Cast<object?>().ToList(),
        "values" => (_, _) => d.Values.ToList(),
        _ => null,
    };

    private static JinjaCallable? ListMethod(List<object?> l, string name) => name switch
    {
        "append" => (a, _) => { l.Add(a.Count > 0 ? a[0] : null); return null; },
        "index" => (a, _) => (long)l.FindIndex(x => JinjaFilters.AreEqual(x, a[0])),
        "count" => (a, _) => (long)l.Count(x => JinjaFilters.AreEqual(x, a[0])),
        _ => null,
    };

    public static string Title(string s)
    {
        var chars = s.ToCharArray();
        bool start = true;
        for (int i = 0; i < chars.Length; i++)
        {
            if (char.IsLetter(chars[i])) { chars[i] = start ? char.ToUpperInvariant(chars[i]) : char.ToLowerInvariant(chars[i]); start = false; }
            else start = true;
        }
        return new string(chars);
    }
}
