using System.Globalization;
using System.Text;

namespace PluginEngine.Core.Chat.Jinja;

/// <summary>A template that cannot be parsed or rendered: the message names the line and column and what is wrong.</summary>
public sealed class TemplateException(string message) : Exception(message);

/// <summary>The <c>raise_exception(...)</c> of a template: the template itself refused the input (its message is the template's).</summary>
public sealed class TemplateRaisedException(string message) : Exception(message);

internal enum TokenKind { Text, ExprStart, ExprEnd, StmtStart, StmtEnd, Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Value, int Offset);

/// <summary>
/// Splits a template into text and tag tokens, the way chat templates are rendered by the Hugging Face tokenizers
/// (Jinja with <c>trim_blocks</c> and <c>lstrip_blocks</c>): the newline after a block tag is dropped, spaces and tabs
/// before a block tag at the start of a line are dropped, and <c>-</c> inside a delimiter strips all whitespace on that side.
/// </summary>
internal sealed class JinjaLexer(string source)
{
    private readonly List<Token> _tokens = [];
    private int _pos;

    public static List<Token> Tokenize(string source) => new JinjaLexer(source).Run();

    /// <summary>"line L, column C" of a source offset, for error messages.</summary>
    public static string Where(string source, int offset)
    {
        offset = Math.Clamp(offset, 0, source.Length);
        int line = 1, column = 1;
        for (int i = 0; i < offset; i++)
        {
            if (source[i] == '\n') { line++; column = 1; }
            else column++;
        }
        return $"line {line}, column {column}";
    }

    private List<Token> Run()
    {
        bool trimNextNewline = false, stripNextWhitespace = false;
        while (_pos < source.Length)
        {
            int open = FindTagStart(_pos);
            int textEnd = open < 0 ? source.Length : open;
            string text = source[_pos..textEnd];
            if (stripNextWhitespace) text = text.TrimStart();
            else if (trimNextNewline && text.StartsWith('\n')) text = text[1..];
            else if (trimNextNewline && text.StartsWith("\r\n", StringComparison.Ordinal)) text = text[2..];
            trimNextNewline = stripNextWhitespace = false;
            if (open < 0)
            {
                AddText(text, textEnd);
                break;
            }

            char kind = source[open + 1];
            bool stripBefore = open + 2 < source.Length && source[open + 2] == '-';
            bool keepBefore = open + 2 < source.Length && source[open + 2] == '+';
            if (stripBefore) text = text.TrimEnd();
            else if (kind != '{' && !keepBefore) text = LStripBlock(text, open);
            AddText(text, _pos);
            _pos = open + 2 + (stripBefore || keepBefore ? 1 : 0);

            if (kind == '#')
            {
                int close = source.IndexOf("#}", _pos, StringComparison.Ordinal);
                if (close < 0) throw Error(open, "comment '{#' is never closed with '#}'");
                bool stripAfter = source[close - 1] == '-' && close - 1 >= _pos;
                _pos = close + 2;
                stripNextWhitespace = stripAfter;
                trimNextNewline = !stripAfter;
                continue;
            }

            _tokens.Add(new Token(kind == '{' ? TokenKind.ExprStart : TokenKind.StmtStart, "", open));
            string closer = kind == '{' ? "}}" : "%}";
            bool stripAfterTag = LexExpression(closer, open);
            _tokens.Add(new Token(kind == '{' ? TokenKind.ExprEnd : TokenKind.StmtEnd, "", _pos));
            _pos += 2;
            stripNextWhitespace = stripAfterTag;
            trimNextNewline = kind == '%' && !stripAfterTag;
        }
        _tokens.Add(new Token(TokenKind.End, "", source.Length));
        return _tokens;
    }

    private void AddText(string text, int offset)
    {
        if (text.Length > 0) _tokens.Add(new Token(TokenKind.Text, text, offset));
    }

    /// <summary>lstrip_blocks: spaces and tabs between the start of the line and a block tag at <paramref name="tagStart"/> go.</summary>
    private string LStripBlock(string text, int tagStart)
    {
        int j = tagStart;
        while (j > 0 && source[j - 1] is ' ' or '\t') j--;
        if (j > 0 && source[j - 1] != '\n') return text;
        int strip = Math.Min(tagStart - j, text.Length);
        return text[..^strip];
    }

    private int FindTagStart(int from)
    {
        for (int i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
            if (source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Lexes expression tokens up to <paramref name="closer"/>; returns whether it was written with '-' (strip after).</summary>
    private bool LexExpression(string closer, int tagStart)
    {
        while (true)
        {
            while (_pos < source.Length && char.IsWhiteSpace(source[_pos])) _pos++;
            if (_pos >= source.Length) throw Error(tagStart, $"tag is never closed with '{closer}'");
            if (source[_pos] == '-' && string.CompareOrdinal(source, _pos + 1, closer, 0, 2) == 0) { _pos++; return true; }
            if (source[_pos] == '+' && string.CompareOrdinal(source, _pos + 1, closer, 0, 2) == 0) { _pos++; return false; }
            if (string.CompareOrdinal(source, _pos, closer, 0, 2) == 0) return false;

            char c = source[_pos];
            int start = _pos;
            if (char.IsLetter(c) || c == '_')
            {
                while (_pos < source.Length && (char.IsLetterOrDigit(source[_pos]) || source[_pos] == '_')) _pos++;
                _tokens.Add(new Token(TokenKind.Name, source[start.._pos], start));
            }
            else if (char.IsDigit(c))
            {
                while (_pos < source.Length && (char.IsDigit(source[_pos]) || source[_pos] == '_')) _pos++;
                bool isFloat = _pos + 1 < source.Length && source[_pos] == '.' && char.IsDigit(source[_pos + 1]);
                if (isFloat)
                {
                    _pos++;
                    while (_pos < source.Length && char.IsDigit(source[_pos])) _pos++;
                }
                _tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, source[start.._pos].Replace("_", ""), start));
            }
            else if (c is '\'' or '"')
            {
                _tokens.Add(new Token(TokenKind.String, LexString(c), start));
            }
            else
            {
                string op = source.Length - _pos >= 2 ? source.Substring(_pos, 2) : "";
                if (op is "==" or "!=" or "<=" or ">=" or "//" or "**") _pos += 2;
                else if ("+-*/%~<>()[]{}.,:|=".Contains(c)) { op = c.ToString(); _pos++; }
                else throw Error(_pos, $"unexpected character '{c}' in a tag");
                _tokens.Add(new Token(TokenKind.Operator, op, start));
            }
        }
    }

    private string LexString(char quote)
    {
        int start = _pos++;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= source.Length) throw Error(start, "string literal is never closed");
            char c = source[_pos++];
            if (c == quote) return sb.ToString();
            if (c != '\\') { sb.Append(c); continue; }
            if (_pos >= source.Length) throw Error(start, "string literal is never closed");
            char e = source[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '0': sb.Append('\0'); break;
                case '\\' or '\'' or '"': sb.Append(e); break;
                case 'u' when _pos + 4 <= source.Length:
                    sb.Append((char)int.Parse(source.AsSpan(_pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    _pos += 4;
                    break;
                case 'x' when _pos + 2 <= source.Length:
                    sb.Append((char)int.Parse(source.AsSpan(_pos, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    _pos += 2;
                    break;
                default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as written
            }
        }
    }

    private TemplateException Error(int offset, string what) => new($"chat template, {Where(source, offset)}: {what}");
}
