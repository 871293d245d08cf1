using System.Globalization;
using System.Text;
using static PluginEngine.Core.Chat.Jinja.JinjaValues;

namespace PluginEngine.Core.Chat.Jinja;

/// <summary>
/// A parsed Jinja template (the subset chat templates use; see docs/chat.md) and its interpreter. Parsing happens
/// once; <see cref="Render"/> is thread-safe (each call has its own scopes). Errors are <see cref="TemplateException"/>
/// naming the line and column; <c>raise_exception(msg)</c> in the template throws <see cref="TemplateRaisedException"/>.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly string _source;
    private readonly List<Stmt> _body;

    private JinjaTemplate(string source, List<Stmt> body)
    {
        _source = source;
        _body = body;
    }

    /// <summary>Parses <paramref name="source"/>; a syntax error is a <see cref="TemplateException"/> with its position.</summary>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new JinjaTemplate(source, JinjaParser.Parse(source));
    }

    /// <summary>Renders with <paramref name="variables"/> (CLR values are converted with <see cref="JinjaValues.FromClr"/>).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var globals = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in Builtins()) globals[name] = value;
        foreach (var (name, value) in variables) globals[name] = FromClr(value);
        var output = new StringBuilder();
        new Renderer(this, output).Run(_body, new Scope(globals, null));
        return output.ToString();
    }

    private static IEnumerable<(string, object?)> Builtins()
    {
        yield return ("raise_exception", (JinjaCallable)((args, _) =>
            throw new TemplateRaisedException(args.Count > 0 ? ToStr(args[0]) : "the chat template raised an exception")));
        yield return ("namespace", (JinjaCallable)((args, kwargs) =>
        {
            var ns = new JinjaNamespace();
            foreach (var a in args)
                if (a is Dictionary<string, object?> d) foreach (var (k, v) in d) ns.Attributes[k] = v;
            foreach (var (k, v) in kwargs) ns.Attributes[k] = v;
            return ns;
        }));
        yield return ("range", (JinjaCallable)((args, _) =>
        {
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = ToLong(args[0]);
            else { start = ToLong(args[0]); stop = ToLong(args[1]); if (args.Count > 2) step = ToLong(args[2]); }
            if (step == 0) throw new TemplateException("chat template: range() step must not be zero");
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
            return list;
        }));
        yield return ("dict", (JinjaCallable)((args, kwargs) =>
        {
            var d = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var a in args) if (a is Dictionary<string, object?> src) foreach (var (k, v) in src) d[k] = v;
            foreach (var (k, v) in kwargs) d[k] = v;
            return d;
        }));
        yield return ("strftime_now", (JinjaCallable)((args, _) => StrFTime(DateTime.Now, args.Count > 0 ? ToStr(args[0]) : "%Y-%m-%d")));
    }

    private static long ToLong(object? v) => v switch
    {
        long l => l,
        double d => (long)d,
        bool b => b ? 1 : 0,
        string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) => l,
        _ => throw new TemplateException($"chat template: expected an integer, got a {TypeName(v)}"),
    };

    /// <summary>The strftime subset templates use to print dates (%d %m %Y %y %b %B %H %M %S %j %A %a %%).</summary>
    private static string StrFTime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            char f = format[++i];
            sb.Append(f switch
            {
                'd' => t.ToString("dd", CultureInfo.InvariantCulture),
                'm' => t.ToString("MM", CultureInfo.InvariantCulture),
                'Y' => t.ToString("yyyy", CultureInfo.InvariantCulture),
                'y' => t.ToString("yy", CultureInfo.InvariantCulture),
                'b' => t.ToString("MMM", CultureInfo.InvariantCulture),
                'B' => t.ToString("MMMM", CultureInfo.InvariantCulture),
                'H' => t.ToString("HH", CultureInfo.InvariantCulture),
                'M' => t.ToString("mm", CultureInfo.InvariantCulture),
                'S' => t.ToString("ss", CultureInfo.InvariantCulture),
                'A' => t.ToString("dddd", CultureInfo.InvariantCulture),
                'a' => t.ToString("ddd", CultureInfo.InvariantCulture),
                'j' => t.DayOfYear.ToString("000", CultureInfo.InvariantCulture),
                '%' => "%",
                _ => "%" + f,
            });
        }
        return sb.ToString();
    }

    private sealed class Scope(Dictionary<string, object?> vars, Scope? parent)
    {
        public Dictionary<string, object?> Vars { get; } = vars;
        public Scope? Parent { get; } = parent;

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s.Vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
    }

    private sealed class LoopControl(bool isBreak) : Exception
    {
        public bool IsBreak { get; } = isBreak;
    }

    private sealed class Renderer(JinjaTemplate template, StringBuilder output)
    {
        private int _depth;

        private TemplateException Error(Node at, string what) => new($"chat template, {JinjaLexer.Where(template._source, at.Offset)}: {what}");

        public void Run(List<Stmt> body, Scope scope)
        {
            if (++_depth > 200) throw Error(body.FirstOrDefault() ?? new TextStmt("", 0), "nesting deeper than 200 (recursive macro?)");
            try
            {
                foreach (var stmt in body) Execute(stmt, scope);
            }
            finally
            {
                _depth--;
            }
        }

        private void Execute(Stmt stmt, Scope scope)
        {
            switch (stmt)
            {
                case TextStmt t:
                    output.Append(t.Text);
                    break;
                case OutputStmt o:
                    output.Append(ToStr(Eval(o.Value, scope)));
                    break;
                case IfStmt i:
                    foreach (var (condition, branch) in i.Branches)
                        if (IsTruthy(Eval(condition, scope))) { Run(branch, scope); return; }
                    if (i.Else is { } otherwise) Run(otherwise, scope);
                    break;
                case ForStmt f:
                    ExecuteFor(f, scope);
                    break;
                case SetStmt s:
                    ExecuteSet(s, scope);
                    break;
                case MacroStmt m:
                    scope.Vars[m.Name] = MakeMacro(m, scope);
                    break;
                case CallExprStmt c:
                    Eval(c.Value, scope);
                    break;
                case BreakStmt:
                    throw new LoopControl(true);
                case ContinueStmt:
                    throw new LoopControl(false);
            }
        }

        private void ExecuteSet(SetStmt s, Scope scope)
        {
            object? value;
            if (s.Body is { } body)
            {
                var saved = output.Length;
                Run(body, scope);
                value = output.ToString(saved, output.Length - saved);
                output.Length = saved;
            }
            else value = Eval(s.Value!, scope);

            if (s.Attribute is { } attribute)
            {
                if (!scope.TryGet(s.Targets[0], out var target) || target is not JinjaNamespace ns)
                    throw Error(s, $"'{s.Targets[0]}.{attribute}' can be set only on a namespace() object (got {TypeName(target)})");
                ns.Attributes[attribute] = value;
                return;
            }
            if (s.Targets.Count == 1) { scope.Vars[s.Targets[0]] = value; return; }
            var items = Iterate(value, s);
            if (items.Count != s.Targets.Count) throw Error(s, $"cannot unpack {items.Count} values into {s.Targets.Count} names");
            for (int i = 0; i < items.Count; i++) scope.Vars[s.Targets[i]] = items[i];
        }

        private void ExecuteFor(ForStmt f, Scope scope)
        {
            var all = Iterate(Eval(f.Iterable, scope), f.Iterable);
            var loopScope = new Scope(new Dictionary<string, object?>(StringComparer.Ordinal), scope);
            List<object?> items = all;
            if (f.Filter is { } filter)
            {
                items = [];
                foreach (var item in all)
                {
                    Bind(f, loopScope, item);
                    if (IsTruthy(Eval(filter, loopScope))) items.Add(item);
                }
            }
            if (items.Count == 0)
            {
                if (f.Else is { } otherwise) Run(otherwise, scope);
                return;
            }
            for (int i = 0; i < items.Count; i++)
            {
                var iterationScope = new Scope(new Dictionary<string, object?>(StringComparer.Ordinal), scope);
                Bind(f, iterationScope, items[i]);
                int index = i;
                var loop = new Dictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["index"] = (long)(i + 1), ["index0"] = (long)i, ["revindex"] = (long)(items.Count - i), ["revindex0"] = (long)(items.Count - i - 1),
                    ["first"] = i == 0, ["last"] = i == items.Count - 1, ["length"] = (long)items.Count, ["depth"] = 1L, ["depth0"] = 0L,
                    ["previtem"] = i > 0 ? items[i - 1] : new Undefined("loop.previtem"),
                    ["nextitem"] = i + 1 < items.Count ? items[i + 1] : new Undefined("loop.nextitem"),
                    ["cycle"] = (JinjaCallable)((args, _) => args.Count == 0 ? null : args[index % args.Count]),
                };
                iterationScope.Vars["loop"] = loop;
                try
                {
                    Run(f.Body, iterationScope);
                }
                catch (LoopControl control)
                {
                    if (control.IsBreak) break;
                }
            }
        }

        private void Bind(ForStmt f, Scope scope, object? item)
        {
            if (f.Targets.Count == 1) { scope.Vars[f.Targets[0]] = item; return; }
            var parts = Iterate(item, f);
            if (parts.Count != f.Targets.Count) throw Error(f, $"cannot unpack {parts.Count} values into {f.Targets.Count} loop variables");
            for (int i = 0; i < parts.Count; i++) scope.Vars[f.Targets[i]] = parts[i];
        }

        private JinjaCallable MakeMacro(MacroStmt m, Scope definedIn) => (args, kwargs) =>
        {
            var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
            var macroScope = new Scope(vars, definedIn);
            for (int i = 0; i < m.Parameters.Count; i++)
            {
                var (name, dflt) = m.Parameters[i];
                vars[name] = i < args.Count ? args[i] : kwargs.TryGetValue(name, out var kw) ? kw : dflt is null ? new Undefined(name) : Eval(dflt, definedIn);
            }
            var saved = output.Length;
            Run(m.Body, macroScope);
            string text = output.ToString(saved, output.Length - saved);
            output.Length = saved;
            return text;
        };

        private List<object?> Iterate(object? value, Node at) => value switch
        {
            List<object?> list => list,
            Dictionary<string, object?> dict => dict.Keys.Cast<object?>().ToList(),
            string s => s.Select(c => (object?)c.ToString()).ToList(),
            Undefined or null => [],
            _ => throw Error(at, $"cannot iterate over a {TypeName(value)}"),
        };

        private object? Eval(Expr e, Scope scope)
        {
            switch (e)
            {
                case Literal l: return l.Value;
                case NameRef n: return scope.TryGet(n.Name, out var v) ? v : new Undefined(n.Name);
                case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
                case DictExpr d:
                {
                    var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, val) in d.Items) dict[ToStr(Eval(k, scope))] = Eval(val, scope);
                    return dict;
                }
                case GetAttr a: return GetAttribute(Eval(a.Target, scope), a.Name, a);
                case GetItem g: return GetIndex(Eval(g.Target, scope), Eval(g.Index, scope), g);
                case Slice s: return DoSlice(Eval(s.Target, scope), s.Start is null ? null : Eval(s.Start, scope), s.Stop is null ? null : Eval(s.Stop, scope), s.Step is null ? null : Eval(s.Step, scope), s);
                case Call c:
                {
                    var target = Eval(c.Target, scope);
                    if (target is not JinjaCallable fn)
                        throw Error(c, target is Undefined u ? $"'{u.Name}' is undefined and cannot be called" : $"a {TypeName(target)} is not callable");
                    var args = c.Args.Select(x => Eval(x, scope)).ToList();
                    var kwargs = c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope));
                    try { return fn(args, kwargs); }
                    catch (TemplateException) { throw; }
                    catch (TemplateRaisedException) { throw; }
                    catch (LoopControl) { throw; }
                    catch (Exception ex) { throw Error(c, ex.Message); }
                }
                case FilterExpr f:
                    return JinjaFilters.Apply(f.Name, Eval(f.Target, scope), f.Args.Select(x => Eval(x, scope)).ToList(),
                        f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope)), what => Error(f, what), (test, value, args) => RunTest(test, value, args, f));
                case TestExpr t:
                {
                    bool result = RunTest(t.Name, Eval(t.Target, scope), t.Args.Select(x => Eval(x, scope)).ToList(), t);
                    return t.Negated ? !result : result;
                }
                case Unary u:
                {
                    var operand = Eval(u.Operand, scope);
                    return u.Op switch
                    {
                        "not" => !IsTruthy(operand),
                        "-" => operand switch { long l => (object)(-l), double d => -d, _ => throw Error(u, $"cannot negate a {TypeName(operand)}") },
                        _ => operand,
                    };
                }
                case Binary b: return EvalBinary(b, scope);
                case Conditional c:
                    return IsTruthy(Eval(c.Condition, scope)) ? Eval(c.Then, scope) : c.Else is null ? new Undefined("else") : Eval(c.Else, scope);
                default:
                    throw Error(e, $"cannot evaluate {e.GetType().Name}");
            }
        }

        private object? EvalBinary(Binary b, Scope scope)
        {
            if (b.Op == "and") { var l = Eval(b.Left, scope); return IsTruthy(l) ? Eval(b.Right, scope) : l; }
            if (b.Op == "or") { var l = Eval(b.Left, scope); return IsTruthy(l) ? l : Eval(b.Right, scope); }
            var left = Eval(b.Left, scope);
            var right = Eval(b.Right, scope);
            switch (b.Op)
            {
                case "~": return ToStr(left) + ToStr(right);
                case "==": return JinjaFilters.AreEqual(left, right);
                case "!=": return !JinjaFilters.AreEqual(left, right);
                case "<" or "<=" or ">" or ">=":
                {
                    int c = Compare(left, right, b);
                    return b.Op switch { "<" => c < 0, "<=" => c <= 0, ">" => c > 0, _ => c >= 0 };
                }
                case "in": return Contains(right, left, b);
                case "not in": return !Contains(right, left, b);
                case "+":
                    return (left, right) switch
                    {
                        (string l, string r) => l + r,
                        (List<object?> l, List<object?> r) => l.Concat(r).ToList(),
                        _ when IsNumber(left) && IsNumber(right) => Arithmetic(b.Op, left, right, b),
                        _ => throw Error(b, $"cannot add a {TypeName(left)} and a {TypeName(right)} (use ~ to join text)"),
                    };
                case "*" when left is string s && right is long n: return string.Concat(Enumerable.Repeat(s, (int)Math.Max(0, n)));
                case "*" when left is List<object?> list && right is long n: return Enumerable.Repeat(list, (int)Math.Max(0, n)).SelectMany(x => x).ToList();
                case "%" when left is string format: return PercentFormat(format, right);
                default: return Arithmetic(b.Op, left, right, b);
            }
        }

        private static bool IsNumber(object? v) => v is long or double or bool;

        private object? Arithmetic(string op, object? left, object? right, Node at)
        {
            if (!IsNumber(left) || !IsNumber(right)) throw Error(at, $"'{op}' needs numbers, got a {TypeName(left)} and a {TypeName(right)}");
            if (left is double || right is double || op == "/")
            {
                double l = Convert.ToDouble(left, CultureInfo.InvariantCulture), r = Convert.ToDouble(right, CultureInfo.InvariantCulture);
                if (r == 0 && op is "/" or "//" or "%") throw Error(at, "division by zero");
                return op switch { "+" => l + r, "-" => l - r, "*" => l * r, "/" => l / r, "//" => Math.Floor(l / r), "%" => l - r * Math.Floor(l / r), _ => Math.Pow(l, r) };
            }
            long a = ToLong(left), c = ToLong(right);
            if (c == 0 && op is "//" or "%") throw Error(at, "division by zero");
            return op switch
            {
                "+" => (object)(a + c), "-" => a - c, "*" => a * c,
                "//" => (long)Math.Floor((double)a / c),
                "%" => ((a % c) + c) % c,
                _ => c >= 0 ? (object)(long)Math.Pow(a, c) : Math.Pow(a, c),
            };
        }

        private string PercentFormat(string format, object? args)
        {
            var values = args is List<object?> list ? list : [args];
            int next = 0;
            var sb = new StringBuilder();
            for (int i = 0; i < format.Length; i++)
            {
                if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
                char f = format[++i];
                if (f == '%') { sb.Append('%'); continue; }
                var v = next < values.Count ? values[next++] : throw new TemplateException("chat template: not enough arguments for % formatting");
                sb.Append(f switch { 'd' or 'i' => ToLong(v).ToString(CultureInfo.InvariantCulture), 'r' => Repr(v), _ => ToStr(v) });
            }
            return sb.ToString();
        }

        private int Compare(object? left, object? right, Node at)
        {
            if (IsNumber(left) && IsNumber(right))
                return Convert.ToDouble(left, CultureInfo.InvariantCulture).CompareTo(Convert.ToDouble(right, CultureInfo.InvariantCulture));
            if (left is string l && right is string r) return string.CompareOrdinal(l, r);
            throw Error(at, $"cannot compare a {TypeName(left)} with a {TypeName(right)}");
        }

        private bool Contains(object? container, object? item, Node at) => container switch
        {
            string s when item is string sub => s.Contains(sub, StringComparison.Ordinal),
            List<object?> list => list.Any(x => JinjaFilters.AreEqual(x, item)),
            Dictionary<string, object?> dict => item is string key && dict.ContainsKey(key),
            JinjaNamespace ns => item is string key && ns.Attributes.ContainsKey(key),
            Undefined or null => false,
            _ => throw Error(at, $"'in' needs a string, list or mapping on the right, got a {TypeName(container)}"),
        };

        private object? GetAttribute(object? target, string name, Node at)
        {
            switch (target)
            {
                case Dictionary<string, object?> dict:
                    if (dict.TryGetValue(name, out var v)) return v;
                    return (object?)JinjaMethods.Bind(target, name) ?? new Undefined(name);
                case JinjaNamespace ns:
                    return ns.Attributes.TryGetValue(name, out var a) ? a : new Undefined(name);
                case Undefined u:
                    throw Error(at, $"'{u.Name}' is undefined, so it has no attribute '{name}'");
                case null:
                    throw Error(at, $"none has no attribute '{name}'");
                default:
                    return (object?)JinjaMethods.Bind(target, name) ?? new Undefined(name);
            }
        }

        private object? GetIndex(object? target, object? index, Node at)
        {
            switch (target)
            {
                case Dictionary<string, object?> dict:
                    return index is string key && dict.TryGetValue(key, out var v) ? v : new Undefined(ToStr(index));
                case JinjaNamespace ns:
                    return index is string k && ns.Attributes.TryGetValue(k, out var a) ? a : new Undefined(ToStr(index));
                case List<object?> list when index is long i:
                    if (i < 0) i += list.Count;
                    return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"[{index}]");
                case string s when index is long i:
                    if (i < 0) i += s.Length;
                    return i >= 0 && i < s.Length ? s[(int)i].ToString() : new Undefined($"[{index}]");
                case Undefined u:
                    throw Error(at, $"'{u.Name}' is undefined, so it cannot be indexed with {Repr(index)}");
                default:
                    if (index is string name) return GetAttribute(target, name, at);
                    throw Error(at, $"cannot index a {TypeName(target)} with a {TypeName(index)}");
            }
        }

        private object? DoSlice(object? target, object? start, object? stop, object? step, Node at)
        {
            long st = step is null ? 1 : ToLong(step);
            if (st == 0) throw Error(at, "slice step must not be zero");
            int count = target switch { string s => s.Length, List<object?> l => l.Count, _ => throw Error(at, $"cannot slice a {TypeName(target)}") };
            long Norm(object? v, long dflt)
            {
                if (v is null) return dflt;
                long i = ToLong(v);
                if (i < 0) i += count;
                return st > 0 ? Math.Clamp(i, 0, count) : Math.Clamp(i, -1, count - 1);
            }
            long from = Norm(start, st > 0 ? 0 : count - 1), to = Norm(stop, st > 0 ? count : -1);
            var indices = new List<int>();
            for (long i = from; st > 0 ? i < to : i > to; i += st) indices.Add((int)i);
            return target is string str
                ? string.Concat(indices.Select(i => str[i]))
                : indices.Select(i => ((List<object?>)target!)[i]).ToList();
        }

        private bool RunTest(string name, object? value, List<object?> args, Node at) => name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            "number" => value is long or double,
            "integer" => value is long,
            "float" => value is double,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "mapping" => value is Dictionary<string, object?> or JinjaNamespace,
            "iterable" => value is string or List<object?> or Dictionary<string, object?>,
            "sequence" => value is string or List<object?> or Dictionary<string, object?>,
            "callable" => value is JinjaCallable,
            "odd" => ToLong(value) % 2 != 0,
            "even" => ToLong(value) % 2 == 0,
            "divisibleby" => args.Count == 1 ? ToLong(value) % ToLong(args[0]) == 0 : throw Error(at, "divisibleby needs one argument"),
            "equalto" or "eq" or "==" or "sameas" => args.Count == 1 ? JinjaFilters.AreEqual(value, args[0]) : throw Error(at, $"test '{name}' needs one argument"),
            "ne" or "!=" => args.Count == 1 && !JinjaFilters.AreEqual(value, args[0]),
            "lt" or "<" => Compare(value, args[0], at) < 0,
            "le" or "<=" => Compare(value, args[0], at) <= 0,
            "gt" or ">" or "greaterthan" => Compare(value, args[0], at) > 0,
            "ge" or ">=" => Compare(value, args[0], at) >= 0,
            "in" => args.Count == 1 && Contains(args[0], value, at),
            "lower" => value is string s && s == s.ToLowerInvariant(),
            "upper" => value is string s && s == s.ToUpperInvariant(),
            _ => throw Error(at, $"unknown test '{name}'"),
        };
    }
}
