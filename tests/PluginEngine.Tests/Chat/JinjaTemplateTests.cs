using PluginEngine.Core.Chat;
using PluginEngine.Core.Chat.Jinja;
using Xunit;

namespace PluginEngine.Tests.Chat;

/// <summary>The Jinja subset on its own: each construct real chat templates use, with Python/Jinja semantics.</summary>
public class JinjaTemplateTests
{
    private static string Render(string template, params (string Name, object? Value)[] variables)
        => JinjaTemplate.Parse(template).Render(variables.ToDictionary(v => v.Name, v => v.Value));

    [Theory]
    [InlineData("{{ 'a' ~ 1 ~ none }}", "a1None")]
    [InlineData("{{ 'a' + 'b' }}{{ 1 + 2 * 3 }}{{ 7 // 2 }}{{ 7 % 3 }}{{ -7 // 2 }}{{ 2 ** 3 }}{{ 1 / 2 }}", "ab731-480.5")]
    [InlineData("{{ 'Hello'[1:3] }}|{{ 'Hello'[::-1] }}|{{ [1,2,3][-1] }}|{{ [1,2,3,4][1:] }}", "el|olleH|3|[2, 3, 4]")]
    [InlineData("{{ '  x  ' | trim }}|{{ 'aBc' | upper }}|{{ 'aBc' | lower }}|{{ [1,2] | length }}|{{ 'ab' | length }}", "x|ABC|abc|2|2")]
    [InlineData("{{ {'a': [1, 'x', true, none]} | tojson }}", "{\"a\": [1, \"x\", true, null]}")]
    [InlineData("{{ {'b': 1, 'a': 'é\"\n'} | tojson(indent=2) }}", "{\n  \"b\": 1,\n  \"a\": \"é\\\"\\n\"\n}")]
    [InlineData("{{ 1 | string ~ true | string }}|{{ [1, 'a'] }}|{{ 1.0 }}", "1True|[1, 'a']|1.0")]
    [InlineData("{{ x is defined }}{{ y is defined }}{{ x is string }}{{ 3 is number }}{{ none is none }}{{ y is not defined }}", "TrueFalseTrueTrueTrueTrue")]
    [InlineData("{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 'z' not in 'abc' }}", "TrueTrueTrueTrue")]
    [InlineData("{{ 'yes' if x else 'no' }}{{ 'yes' if y else 'no' }}{{ y or 'fallback' }}{{ x and 'both' }}", "yesnofallbackboth")]
    [InlineData("{{ '  a b '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ 'Ab'.title() }}|{{ 'xyx'.replace('x', 'z') }}", "a b|['a', 'b']|True|Ab|zyz")]
    [InlineData("{{ y | default('d') }}|{{ '' | default('e', true) }}|{{ ['a','b'] | join('-') }}|{{ [3,1,2] | sort | first }}|{{ [1,2] | last }}", "d|e|a-b|1|2")]
    public void Expressions_follow_python_semantics(string template, string expected)
        => Assert.Equal(expected, Render(template, ("x", "value")));

    [Fact]
    public void Loops_have_loop_variables_scoping_and_namespace()
    {
        const string template = """
            {%- set ns = namespace(count=0, last='') -%}
            {%- set outer = 'kept' -%}
            {%- for item in items if item != 'skip' -%}
                {%- set outer = 'shadowed' -%}
                {{- loop.index }}/{{ loop.length }}{{ ':first' if loop.first }}{{ ':last' if loop.last }}={{ item }} {# comment #}
                {%- set ns.count = ns.count + 1 -%}
                {%- set ns.last = item -%}
            {%- endfor -%}
            |{{ outer }}|{{ ns.count }}|{{ ns.last }}
            {%- for k, v in {'a': 1, 'b': 2}.items() %}|{{ k }}{{ v }}{% endfor -%}
            {%- for x in [] %}never{% else %}|empty{% endfor -%}
            {%- for x in [1, 2, 3, 4] %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif %}|{{ x }}{% endfor %}
            """;
        Assert.Equal("1/3:first=a 2/3=b 3/3:last=c |kept|3|c|a1|b2|empty|2", Render(template, ("items", new List<object?> { "a", "skip", "b", "c" })));
    }

    [Fact]
    public void Trim_blocks_and_lstrip_blocks_match_the_hugging_face_environment()
    {
        // A block tag on its own indented line leaves no trace; a newline after an expression stays.
        const string template = "A\n    {% if true %}\n  B {{ 'x' }}\n    {% endif %}\nC";
        Assert.Equal("A\n  B x\nC", Render(template));
        Assert.Equal("a-b", Render("a  {%- if true -%}  -  {%- endif -%}  b"));
        Assert.Equal("xy", Render("x{# note #}\ny"));
    }

    [Fact]
    public void Macros_and_elif_and_block_set()
    {
        const string template = "{% macro tag(name, v='d') %}<{{ name }}={{ v }}>{% endmacro %}{{ tag('a') }}{{ tag('b', v=2) }}"
            + "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %}{% endfor %}"
            + "{% set block %}in{{ 1 + 1 }}{% endset %}[{{ block }}]";
        Assert.Equal("<a=d><b=2>onetwomany[in2]", Render(template));
    }

    [Fact]
    public void Raise_exception_reports_the_templates_message()
    {
        var e = Assert.Throws<TemplateRaisedException>(() => Render("{{ raise_exception('Roles must alternate') }}"));
        Assert.Equal("Roles must alternate", e.Message);
    }

    [Theory]
    [InlineData("{% if x %}no end", "line 1, column 4", "never closed")]
    [InlineData("ok\n{{ 1 + }}", "line 2, column 8", "expected a value")]
    [InlineData("{% for x in y %}{% endif %}", "line 1", "expected endfor")]
    [InlineData("{{ x | nosuchfilter }}", "line 1, column 6", "unknown filter 'nosuchfilter'")]
    [InlineData("{{ y.attr }}", "line 1", "'y' is undefined")]
    [InlineData("{% while x %}{% endwhile %}", "line 1", "unsupported statement 'while'")]
    [InlineData("{{ 1 + 'a' }}", "line 1", "cannot add")]
    public void Errors_name_the_position_and_the_problem(string template, string where, string what)
    {
        var e = Assert.Throws<TemplateException>(() => Render(template, ("x", 1L)));
        Assert.Contains(where, e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void A_template_with_tools_dates_and_tool_results_renders()
    {
        // The constructs of tool-aware templates (written here, not copied): defaults for undefined variables, a date,
        // JSON of tool definitions, tool calls from assistant messages, a renamed role and selectattr over messages.
        const string template = """
            {%- if not date_string is defined -%}{%- set date_string = '26 Jul 2024' -%}{%- endif -%}
            {%- set system = (messages | selectattr('role', 'equalto', 'system') | first) -%}
            {{- bos_token ~ '<sys>Date: ' ~ date_string -}}
            {%- if system is defined -%}{{ '\n' ~ system.content | trim }}{%- endif -%}
            {%- if tools is defined and tools -%}
                {%- for t in tools -%}{{ '\n' ~ (t | tojson(indent=None)) }}{%- endfor -%}
            {%- endif -%}
            {{- '</sys>' -}}
            {%- for m in messages | rejectattr('role', 'equalto', 'system') -%}
                {%- set role = 'ipython' if m.role == 'tool' else m.role -%}
                {%- if m.tool_calls is defined and m.tool_calls -%}
                    {%- for call in m.tool_calls -%}<call>{{ call.name }}({% for k, v in call.arguments | items %}{{ k }}={{ v | tojson }}{{ ', ' if not loop.last }}{% endfor %})</call>{%- endfor -%}
                {%- else -%}
                    <{{ role }}>{{ m.content }}</{{ role }}>
                {%- endif -%}
            {%- endfor -%}
            """;
        var messages = new List<object?>
        {
            new Dictionary<string, object?> { ["role"] = "system", ["content"] = " Use tools. " },
            new Dictionary<string, object?> { ["role"] = "user", ["content"] = "Weather in Paris?" },
            new Dictionary<string, object?>
            {
                ["role"] = "assistant", ["content"] = "",
                ["tool_calls"] = new List<object?> { new Dictionary<string, object?> { ["name"] = "weather", ["arguments"] = new Dictionary<string, object?> { ["city"] = "Paris", ["days"] = 2L } } },
            },
            new Dictionary<string, object?> { ["role"] = "tool", ["content"] = "sunny" },
        };
        var tools = new List<object?> { new Dictionary<string, object?> { ["name"] = "weather", ["parameters"] = new Dictionary<string, object?> { ["city"] = "string" } } };
        Assert.Equal("<s><sys>Date: 26 Jul 2024\nUse tools.\n{\"name\": \"weather\", \"parameters\": {\"city\": \"string\"}}</sys>"
            + "<user>Weather in Paris?</user><call>weather(city=\"Paris\", days=2)</call><ipython>sunny</ipython>",
            Render(template, ("messages", messages), ("tools", tools), ("bos_token", "<s>")));
        Assert.Equal("<s><sys>Date: 1 Jan</sys><user>x</user>",
            Render(template, ("messages", new List<object?> { new Dictionary<string, object?> { ["role"] = "user", ["content"] = "x" } }), ("bos_token", "<s>"), ("date_string", "1 Jan")));
    }

    [Fact]
    public void A_typical_system_message_extraction_template_renders()
    {
        // The pattern many real templates use: pull the system message out first, then loop over the rest.
        const string template = """
            {%- if messages[0]['role'] == 'system' -%}
                {%- set system_message = messages[0]['content'] | trim -%}
                {%- set loop_messages = messages[1:] -%}
            {%- else -%}
                {%- set system_message = 'default system' -%}
                {%- set loop_messages = messages -%}
            {%- endif -%}
            {{- bos_token + '[SYS]' + system_message + '[/SYS]' -}}
            {%- for message in loop_messages -%}
                {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
                    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
                {%- endif -%}
                {{- '[' + message['role'] | upper + ']' + message['content'] -}}
            {%- endfor -%}
            {%- if add_generation_prompt -%}{{ '[ASSISTANT]' }}{%- endif -%}
            """;
        var chat = ChatTemplate.Parse(template, "test template");
        string text = chat.Render([ChatTurn.System(" sys "), ChatTurn.User("hi"), ChatTurn.Assistant("yo")], true, "<s>", "</s>");
        Assert.Equal("<s>[SYS]sys[/SYS][USER]hi[ASSISTANT]yo[ASSISTANT]", text);
        var e = Assert.Throws<ChatFormatException>(() => chat.Render([ChatTurn.User("a"), ChatTurn.User("b")], true, "<s>", "</s>"));
        Assert.Contains("test template refused the conversation: Conversation roles must alternate", e.Message);
    }
}
