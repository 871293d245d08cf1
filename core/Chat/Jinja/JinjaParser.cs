using System.Globalization;

namespace PluginEngine.Core.Chat.Jinja;

// The syntax tree. Every node keeps the source offset of its first token for error messages.
internal abstract record Node(int Offset);

internal abstract record Expr(int Offset) : Node(Offset);
internal sealed record Literal(object? Value, int Offset) : Expr(Offset);
internal sealed record NameRef(string Name, int Offset) : Expr(Offset);
internal sealed record ListExpr(List<Expr> Items, int Offset) : Expr(Offset);
internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Offset) : Expr(Offset);
internal sealed record GetAttr(Expr Target, string Name, int Offset) : Expr(Offset);
internal sealed record GetItem(Expr Target, Expr Index, int Offset) : Expr(Offset);
internal sealed record Slice(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Offset) : Expr(Offset);
internal sealed record Call(Expr Target, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Offset) : Expr(Offset);
internal sealed record FilterExpr(Expr Target, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs, int Offset) : Expr(Offset);
internal sealed record TestExpr(Expr Target, string Name, List<Expr> Args, bool Negated, int Offset) : Expr(Offset);
internal sealed record Unary(string Op, Expr Operand, int Offset) : Expr(Offset);
internal sealed record Binary(string Op, Expr Left, Expr Right, int Offset) : Expr(Offset);
internal sealed record Conditional(Expr Condition, Expr Then, Expr? Else, int Offset) : Expr(Offset);

internal abstract record Stmt(int Offset) : Node(Offset);
internal sealed record TextStmt(string Text, int Offset) : Stmt(Offset);
internal sealed record OutputStmt(Expr Value, int Offset) : Stmt(Offset);
internal sealed record IfStmt(List<(Expr Condition, List<Stmt> Body)> Branches, List<Stmt>? Else, int Offset) : Stmt(Offset);
internal sealed record ForStmt(List<string> Targets, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt>? Else, int Offset) : Stmt(Offset);
internal sealed record SetStmt(List<string> Targets, string? Attribute, Expr? Value, List<Stmt>? Body, int Offset) : Stmt(Offset);
internal sealed record MacroStmt(string Name, List<(string Name, Expr? Default)> Parameters, List<Stmt> Body, int Offset) : Stmt(Offset);
internal sealed record CallExprStmt(Expr Value, int Offset) : Stmt(Offset); // {% do ... %}
internal sealed record BreakStmt(int Offset) : Stmt(Offset);
internal sealed record ContinueStmt(int Offset) : Stmt(Offset);

/// <summary>
/// Recursive-descent parser of the Jinja subset chat templates use: text, <c>{{ }}</c>, if/elif/else, for (with tuple
/// targets, an <c>if</c> filter and else), set (plain, <c>ns.attr</c>, block), macro, do, break/continue, generation
/// blocks (rendered as their body), and expressions with Python precedence.
/// </summary>
internal sealed class JinjaParser
{
    private readonly string _source;
    private readonly List<Token> _tokens;
    private int _i;

    private JinjaParser(string source)
    {
        _source = source;
        _tokens = JinjaLexer.Tokenize(source);
    }

    public static List<Stmt> Parse(string source)
    {
        var p = new JinjaParser(source);
        var body = p.ParseBlock(out string? end);
        if (end is not null) throw p.Error(p.Peek.Offset, $"'{{% {end} %}}' without a matching opening tag");
        return body;
    }

    private Token Peek => _tokens[_i];
    private Token Next() => _tokens[_i++];

    private TemplateException Error(int offset, string what) => new($"chat template, {JinjaLexer.Where(_source, offset)}: {what}");

    /// <summary>Parses statements until the end or a block keyword this level does not own (returned in <paramref name="endKeyword"/>).</summary>
    private List<Stmt> ParseBlock(out string? endKeyword, params string[] stopAt)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var t = Peek;
            switch (t.Kind)
            {
                case TokenKind.End:
                    endKeyword = null;
                    return body;
                case TokenKind.Text:
                    _i++;
                    body.Add(new TextStmt(t.Value, t.Offset));
                    break;
                case TokenKind.ExprStart:
                    _i++;
                    var value = ParseExpression();
                    Expect(TokenKind.ExprEnd, "'}}'");
                    body.Add(new OutputStmt(value, t.Offset));
                    break;
                case TokenKind.StmtStart:
                    var keyword = _tokens[_i + 1];
                    if (keyword.Kind != TokenKind.Name) throw Error(keyword.Offset, "expected a statement keyword after '{%'");
                    if (stopAt.Contains(keyword.Value) || keyword.Value.StartsWith("end", StringComparison.Ordinal) || keyword.Value is "elif" or "else")
                    {
                        _i += 2;
                        endKeyword = keyword.Value;
                        return body;
                    }
                    _i += 2;
                    body.Add(ParseStatement(keyword));
                    break;
                default:
                    throw Error(t.Offset, $"unexpected '{t.Value}'");
            }
        }
    }

    private List<Stmt> ParseBody(int start, string opener, out string end, params string[] stopAt)
    {
        var body = ParseBlock(out string? e, stopAt);
        end = e ?? throw Error(start, $"'{{% {opener} %}}' is never closed");
        return body;
    }

    private Stmt ParseStatement(Token keyword)
    {
        int at = keyword.Offset;
        switch (keyword.Value)
        {
            case "if":
            {
                var branches = new List<(Expr, List<Stmt>)>();
                List<Stmt>? otherwise = null;
                var condition = ParseExpression();
                EndTag();
                while (true)
                {
                    var body = ParseBody(at, "if", out string end, "elif", "else", "endif");
                    branches.Add((condition, body));
                    if (end == "elif") { condition = ParseExpression(); EndTag(); continue; }
                    if (end == "else")
                    {
                        EndTag();
                        otherwise = ParseBody(at, "if", out end, "endif");
                    }
                    if (end != "endif") throw Error(at, $"'{{% if %}}' closed by '{{% {end} %}}'; expected endif");
                    EndTag();
                    return new IfStmt(branches, otherwise, at);
                }
            }
            case "for":
            {
                var targets = new List<string> { ExpectName() };
                while (IsOp(",")) { _i++; targets.Add(ExpectName()); }
                if (!(Peek.Kind == TokenKind.Name && Peek.Value == "in")) throw Error(Peek.Offset, "expected 'in' in a for loop");
                _i++;
                var iterable = ParseConditional(allowIfWithoutElse: false);
                Expr? filter = null;
                if (Peek.Kind == TokenKind.Name && Peek.Value == "if") { _i++; filter = ParseOr(); }
                if (Peek.Kind == TokenKind.Name && Peek.Value == "recursive") throw Error(Peek.Offset, "recursive loops are not supported");
                EndTag();
                var body = ParseBody(at, "for", out string end, "else", "endfor");
                List<Stmt>? otherwise = null;
                if (end == "else") { EndTag(); otherwise = ParseBody(at, "for", out end, "endfor"); }
                if (end != "endfor") throw Error(at, $"'{{% for %}}' closed by '{{% {end} %}}'; expected endfor");
                EndTag();
                return new ForStmt(targets, iterable, filter, body, otherwise, at);
            }
            case "set":
            {
                var targets = new List<string> { ExpectName() };
                string? attribute = null;
                if (IsOp(".")) { _i++; attribute = ExpectName(); }
                while (IsOp(",")) { _i++; targets.Add(ExpectName()); }
                if (IsOp("="))
                {
                    _i++;
                    var value = ParseTuple();
                    EndTag();
                    return new SetStmt(targets, attribute, value, null, at);
                }
                EndTag();
                var body = ParseBody(at, "set", out string end, "endset");
                if (end != "endset") throw Error(at, $"block '{{% set %}}' closed by '{{% {end} %}}'");
                EndTag();
                return new SetStmt(targets, attribute, null, body, at);
            }
            case "macro":
            {
                string name = ExpectName();
                Expect(TokenKind.Operator, "'('", "(");
                var parameters = new List<(string, Expr?)>();
                while (!IsOp(")"))
                {
                    string p = ExpectName();
                    Expr? dflt = null;
                    if (IsOp("=")) { _i++; dflt = ParseExpression(); }
                    parameters.Add((p, dflt));
                    if (IsOp(",")) _i++;
                    else if (!IsOp(")")) throw Error(Peek.Offset, "expected ',' or ')' in macro parameters");
                }
                _i++;
                EndTag();
                var body = ParseBody(at, "macro", out string end, "endmacro");
                if (end != "endmacro") throw Error(at, $"'{{% macro %}}' closed by '{{% {end} %}}'");
                EndTag();
                return new MacroStmt(name, parameters, body, at);
            }
            case "do":
            {
                var value = ParseExpression();
                EndTag();
                return new CallExprStmt(value, at);
            }
            case "break": EndTag(); return new BreakStmt(at);
            case "continue": EndTag(); return new ContinueStmt(at);
            case "generation":
            {
                // Marks assistant text for training masks; renders as its body.
                EndTag();
                var body = ParseBody(at, "generation", out string end, "endgeneration");
                if (end != "endgeneration") throw Error(at, $"'{{% generation %}}' closed by '{{% {end} %}}'");
                EndTag();
                return new IfStmt([(new Literal(true, at), body)], null, at);
            }
            default:
                throw Error(at, $"unsupported statement '{keyword.Value}' (supported: if, for, set, macro, do, break, continue, generation)");
        }
    }

    private void EndTag() => Expect(TokenKind.StmtEnd, "'%}'");

    private Token Expect(TokenKind kind, string what, string? value = null)
    {
        var t = Peek;
        if (t.Kind != kind || value is not null && t.Value != value)
            throw Error(t.Offset, $"expected {what}, found {Describe(t)}");
        _i++;
        return t;
    }

    private static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "the end of the template",
        TokenKind.ExprEnd => "'}}'",
        TokenKind.StmtEnd => "'%}'",
        TokenKind.String => "a string",
        _ => $"'{t.Value}'",
    };

    private string ExpectName() => Expect(TokenKind.Name, "a name").Value;

    private bool IsOp(string op) => Peek.Kind == TokenKind.Operator && Peek.Value == op;
    private bool IsName(string name) => Peek.Kind == TokenKind.Name && Peek.Value == name;

    /// <summary>An expression, or a bare tuple <c>a, b</c> (for set).</summary>
    private Expr ParseTuple()
    {
        var first = ParseExpression();
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (IsOp(",")) { _i++; items.Add(ParseExpression()); }
        return new ListExpr(items, first.Offset);
    }

    private Expr ParseExpression() => ParseConditional(allowIfWithoutElse: true);

    private Expr ParseConditional(bool allowIfWithoutElse)
    {
        var value = ParseOr();
        while (IsName("if"))
        {
            if (!allowIfWithoutElse) return value;
            int at = Next().Offset;
            var condition = ParseOr();
            Expr? otherwise = null;
            if (IsName("else")) { _i++; otherwise = ParseConditional(allowIfWithoutElse); }
            value = new Conditional(condition, value, otherwise, at);
        }
        return value;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsName("or")) { int at = Next().Offset; left = new Binary("or", left, ParseAnd(), at); }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and")) { int at = Next().Offset; left = new Binary("and", left, ParseNot(), at); }
        return left;
    }

    private Expr ParseNot()
    {
        if (IsName("not")) { int at = Next().Offset; return new Unary("not", ParseNot(), at); }
        return ParseComparison();
    }

    private Expr ParseComparison()
    {
        var left = ParseConcat();
        while (true)
        {
            int at = Peek.Offset;
            if (Peek.Kind == TokenKind.Operator && Peek.Value is "==" or "!=" or "<" or "<=" or ">" or ">=")
            {
                string op = Next().Value;
                left = new Binary(op, left, ParseConcat(), at);
            }
            else if (IsName("in")) { _i++; left = new Binary("in", left, ParseConcat(), at); }
            else if (IsName("not") && _tokens[_i + 1] is { Kind: TokenKind.Name, Value: "in" }) { _i += 2; left = new Binary("not in", left, ParseConcat(), at); }
            else if (IsName("is"))
            {
                _i++;
                bool negated = false;
                if (IsName("not")) { _i++; negated = true; }
                string test = Peek.Kind == TokenKind.Name ? Next().Value
                    : Peek.Kind == TokenKind.Operator && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=" ? Next().Value
                    : throw Error(Peek.Offset, "expected a test name after 'is'");
                var args = new List<Expr>();
                if (IsOp("(")) args = ParseCallArguments(out _);
                else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float || Peek.Kind == TokenKind.Name && Peek.Value is not ("and" or "or" or "else" or "if" or "in" or "is" or "not"))
                    args.Add(ParsePrimaryWithPostfix());
                left = new TestExpr(left, test, args, negated, at);
            }
            else return left;
        }
    }

    private Expr ParseConcat()
    {
        var left = ParseAdditive();
        while (IsOp("~")) { int at = Next().Offset; left = new Binary("~", left, ParseAdditive(), at); }
        return left;
    }

    private Expr ParseAdditive()
    {
        var left = ParseMultiplicative();
        while (IsOp("+") || IsOp("-")) { var op = Next(); left = new Binary(op.Value, left, ParseMultiplicative(), op.Offset); }
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParseUnary();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var op = Next(); left = new Binary(op.Value, left, ParseUnary(), op.Offset); }
        return left;
    }

    private Expr ParseUnary()
    {
        if (IsOp("-") || IsOp("+")) { var op = Next(); return new Unary(op.Value, ParseUnary(), op.Offset); }
        return ParsePower();
    }

    private Expr ParsePower()
    {
        var left = ParseFiltered();
        if (IsOp("**")) { int at = Next().Offset; return new Binary("**", left, ParseUnary(), at); }
        return left;
    }

    private Expr ParseFiltered()
    {
        var value = ParsePrimaryWithPostfix();
        while (IsOp("|"))
        {
            int at = Next().Offset;
            string name = ExpectName();
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            if (IsOp("(")) args = ParseCallArguments(out kwargs);
            value = new FilterExpr(value, name, args, kwargs, at);
        }
        return value;
    }

    private Expr ParsePrimaryWithPostfix()
    {
        var value = ParsePrimary();
        while (true)
        {
            int at = Peek.Offset;
            if (IsOp("."))
            {
                _i++;
                var t = Next();
                if (t.Kind is not (TokenKind.Name or TokenKind.Integer)) throw Error(t.Offset, "expected an attribute name after '.'");
                value = t.Kind == TokenKind.Integer ? new GetItem(value, new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Offset), at) : new GetAttr(value, t.Value, at);
            }
            else if (IsOp("["))
            {
                _i++;
                Expr? start = null, stop = null, step = null;
                if (!IsOp(":")) start = ParseExpression();
                if (IsOp(":"))
                {
                    _i++;
                    if (!IsOp(":") && !IsOp("]")) stop = ParseExpression();
                    if (IsOp(":")) { _i++; if (!IsOp("]")) step = ParseExpression(); }
                    Expect(TokenKind.Operator, "']'", "]");
                    value = new Slice(value, start, stop, step, at);
                }
                else
                {
                    Expect(TokenKind.Operator, "']'", "]");
                    value = new GetItem(value, start!, at);
                }
            }
            else if (IsOp("("))
            {
                var args = ParseCallArguments(out var kwargs);
                value = new Call(value, args, kwargs, at);
            }
            else return value;
        }
    }

    private List<Expr> ParseCallArguments(out List<(string, Expr)> kwargs)
    {
        Expect(TokenKind.Operator, "'('", "(");
        var args = new List<Expr>();
        kwargs = [];
        while (!IsOp(")"))
        {
            if (Peek.Kind == TokenKind.Name && _tokens[_i + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                string name = Next().Value;
                _i++;
                kwargs.Add((name, ParseExpression()));
            }
            else args.Add(ParseExpression());
            if (IsOp(",")) _i++;
            else if (!IsOp(")")) throw Error(Peek.Offset, $"expected ',' or ')', found {Describe(Peek)}");
        }
        _i++;
        return args;
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.String:
            {
                // Adjacent string literals concatenate, as in Python.
                string s = t.Value;
                while (Peek.Kind == TokenKind.String) s += Next().Value;
                return new Literal(s, t.Offset);
            }
            case TokenKind.Integer: return new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Offset);
            case TokenKind.Float: return new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Offset);
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Literal(true, t.Offset),
                    "false" or "False" => new Literal(false, t.Offset),
                    "none" or "None" => new Literal(null, t.Offset),
                    _ => new NameRef(t.Value, t.Offset),
                };
            case TokenKind.Operator when t.Value == "(":
            {
                if (IsOp(")")) { _i++; return new ListExpr([], t.Offset); }
                var inner = ParseExpression();
                if (IsOp(","))
                {
                    var items = new List<Expr> { inner };
                    while (IsOp(",")) { _i++; if (IsOp(")")) break; items.Add(ParseExpression()); }
                    inner = new ListExpr(items, t.Offset);
                }
                Expect(TokenKind.Operator, "')'", ")");
                return inner;
            }
            case TokenKind.Operator when t.Value == "[":
            {
                var items = new List<Expr>();
                while (!IsOp("]"))
                {
                    items.Add(ParseExpression());
                    if (IsOp(",")) _i++;
                    else if (!IsOp("]")) throw Error(Peek.Offset, $"expected ',' or ']', found {Describe(Peek)}");
                }
                _i++;
                return new ListExpr(items, t.Offset);
            }
            case TokenKind.Operator when t.Value == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    var key = ParseExpression();
                    Expect(TokenKind.Operator, "':'", ":");
                    items.Add((key, ParseExpression()));
                    if (IsOp(",")) _i++;
                    else if (!IsOp("}")) throw Error(Peek.Offset, $"expected ',' or '}}', found {Describe(Peek)}");
                }
                _i++;
                return new DictExpr(items, t.Offset);
            }
            default:
                throw Error(t.Offset, $"expected a value, found {Describe(t)}");
        }
    }
}
