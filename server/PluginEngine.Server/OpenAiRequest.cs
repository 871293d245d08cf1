using System.Text.Json;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Server;

/// <summary>What a chat or text completion request asks for, checked field by field (docs/serve.md#request-fields).</summary>
public sealed record OpenAiRequest
{
    public string? Model { get; init; }
    public bool Stream { get; init; }
    public bool IncludeUsage { get; init; }
    /// <summary>max_tokens / max_completion_tokens as given (null: until the end of the turn or a full context).</summary>
    public long? MaxTokens { get; init; }
    public required SamplerSettings Sampling { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    /// <summary>Chat: the conversation. Null for text completions.</summary>
    public IReadOnlyList<ChatTurn>? Messages { get; init; }
    /// <summary>Text completions: the prompt. Null for chat.</summary>
    public string? Prompt { get; init; }
}

/// <summary>
/// Reads OpenAI request bodies with <see cref="JsonDocument"/> and checks every field it uses: a wrong type or value is an
/// <see cref="ApiError"/> naming the JSON path (<c>$.messages[1].content</c>) and what was expected. Unknown fields are
/// ignored, as OpenAI-compatible servers do; fields that ask for something this server cannot do (tools, n &gt; 1,
/// logprobs, JSON output) are refused rather than silently ignored.
/// </summary>
public static class OpenAiRequestReader
{
    /// <summary>Stop sequences a request may give (OpenAI allows 4; a few more cost nothing here).</summary>
    public const int MaxStopSequences = 16;

    public static OpenAiRequest ReadChat(JsonElement root, SamplerSettings defaults, bool seedFixed)
    {
        RequireObject(root);
        foreach (var refused in new[] { "tools", "functions" })
            if (root.TryGetProperty(refused, out var t) && t.ValueKind != JsonValueKind.Null && !(t.ValueKind == JsonValueKind.Array && t.GetArrayLength() == 0))
                throw ApiError.BadRequest($"$.{refused}: tool and function calling are not supported by this server; send the request without {refused}", refused, "unsupported_parameter");
        foreach (var refused in new[] { "tool_choice", "function_call" })
            if (root.TryGetProperty(refused, out var t) && t.ValueKind != JsonValueKind.Null && !(t.ValueKind == JsonValueKind.String && t.GetString() == "none"))
                throw ApiError.BadRequest($"$.{refused}: tool and function calling are not supported by this server; omit {refused} or set it to \"none\"", refused, "unsupported_parameter");
        if (root.TryGetProperty("response_format", out var format) && format.ValueKind != JsonValueKind.Null)
        {
            if (format.ValueKind != JsonValueKind.Object) throw WrongType("$.response_format", "an object", format);
            string? type = OptionalString(format, "type", "$.response_format.type");
            if (type is not (null or "text"))
                throw ApiError.BadRequest($"$.response_format.type: \"{type}\" is not supported (only \"text\"): this server does not constrain output to JSON", "response_format", "unsupported_parameter");
        }
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind == JsonValueKind.Null)
            throw ApiError.BadRequest("$.messages: required (the conversation to answer, an array of {role, content})", "messages", "missing_required_parameter");
        if (messages.ValueKind != JsonValueKind.Array) throw WrongType("$.messages", "an array of messages", messages);
        if (messages.GetArrayLength() == 0) throw ApiError.BadRequest("$.messages: must hold at least one message", "messages");
        var turns = new List<ChatTurn>(messages.GetArrayLength());
        int i = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string path = $"$.messages[{i++}]";
            if (message.ValueKind != JsonValueKind.Object) throw WrongType(path, "a message object {role, content}", message);
            string role = OptionalString(message, "role", path + ".role")
                ?? throw ApiError.BadRequest($"{path}.role: required (system, user or assistant)", Param(path + ".role"), "missing_required_parameter");
            role = role switch
            {
                "developer" => ChatRoles.System, // newer OpenAI clients name the system message "developer"
                ChatRoles.System or ChatRoles.User or ChatRoles.Assistant => role,
                "tool" or "function" => throw ApiError.BadRequest($"{path}.role: \"{role}\" messages carry tool results; tool calling is not supported by this server", Param(path + ".role"), "unsupported_parameter"),
                _ => throw ApiError.BadRequest($"{path}.role: \"{role}\" is not a role (system, developer, user or assistant)", Param(path + ".role")),
            };
            if (message.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array && calls.GetArrayLength() > 0)
                throw ApiError.BadRequest($"{path}.tool_calls: tool calling is not supported by this server", Param(path + ".tool_calls"), "unsupported_parameter");
            turns.Add(new ChatTurn(role, Content(message, path)));
        }
        return ReadCommon(root, defaults, seedFixed) with { Messages = turns };
    }

    public static OpenAiRequest ReadCompletion(JsonElement root, SamplerSettings defaults, bool seedFixed)
    {
        RequireObject(root);
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw ApiError.BadRequest("$.prompt: required (the text to continue)", "prompt", "missing_required_parameter");
        string text = prompt.ValueKind switch
        {
            JsonValueKind.String => prompt.GetString()!,
            JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String => prompt[0].GetString()!,
            JsonValueKind.Array => throw ApiError.BadRequest("$.prompt: only one prompt per request is supported (a string, or an array of one string)", "prompt", "unsupported_parameter"),
            _ => throw WrongType("$.prompt", "a string", prompt),
        };
        if (OptionalBool(root, "echo", "$.echo") == true)
            throw ApiError.BadRequest("$.echo: echoing the prompt is not supported; omit echo or set it to false", "echo", "unsupported_parameter");
        if (OptionalInteger(root, "best_of", "$.best_of") is > 1)
            throw ApiError.BadRequest("$.best_of: only 1 is supported (one completion per request)", "best_of", "unsupported_parameter");
        if (root.TryGetProperty("suffix", out var suffix) && suffix.ValueKind != JsonValueKind.Null)
            throw ApiError.BadRequest("$.suffix: insertion (a suffix after the completion) is not supported", "suffix", "unsupported_parameter");
        return ReadCommon(root, defaults, seedFixed) with { Prompt = text };
    }

    /// <summary>The fields chat and text completions share: model, stream, limits, sampling, stop, n, logprobs.</summary>
    private static OpenAiRequest ReadCommon(JsonElement root, SamplerSettings defaults, bool seedFixed)
    {
        string? model = OptionalString(root, "model", "$.model");
        bool stream = OptionalBool(root, "stream", "$.stream") ?? false;
        bool includeUsage = false;
        if (root.TryGetProperty("stream_options", out var so) && so.ValueKind != JsonValueKind.Null)
        {
            if (so.ValueKind != JsonValueKind.Object) throw WrongType("$.stream_options", "an object", so);
            includeUsage = OptionalBool(so, "include_usage", "$.stream_options.include_usage") ?? false;
        }

        long? maxTokens = OptionalInteger(root, "max_completion_tokens", "$.max_completion_tokens") ?? OptionalInteger(root, "max_tokens", "$.max_tokens");
        if (maxTokens is < 1)
        {
            string name = root.TryGetProperty("max_completion_tokens", out var mct) && mct.ValueKind != JsonValueKind.Null ? "max_completion_tokens" : "max_tokens";
            throw ApiError.BadRequest($"$.{name}: {maxTokens} — must be at least 1", name, "invalid_value");
        }

        if (OptionalInteger(root, "n", "$.n") is { } n && n != 1)
            throw ApiError.BadRequest($"$.n: {n} — only 1 is supported (one choice per request; send several requests instead)", "n", "unsupported_parameter");
        if (root.TryGetProperty("logprobs", out var lp) && lp.ValueKind is JsonValueKind.True or JsonValueKind.Number)
            throw ApiError.BadRequest("$.logprobs: log probabilities are not supported; omit logprobs or set it to false", "logprobs", "unsupported_parameter");

        var sampling = defaults;
        if (OptionalNumber(root, "temperature", "$.temperature") is { } temperature)
            sampling = sampling with { Temperature = (float)InRange(temperature, 0, 2, "temperature") };
        if (OptionalNumber(root, "top_p", "$.top_p") is { } topP)
            sampling = sampling with { TopP = (float)InRange(topP, 0, 1, "top_p") };
        double presence = InRange(OptionalNumber(root, "presence_penalty", "$.presence_penalty") ?? 0, -2, 2, "presence_penalty");
        double frequency = InRange(OptionalNumber(root, "frequency_penalty", "$.frequency_penalty") ?? 0, -2, 2, "frequency_penalty");
        if (presence > 0 || frequency > 0)
            sampling = sampling with { RepeatPenalty = 1 + (float)Math.Max(presence, frequency) }; // one multiplicative penalty (docs/serve.md#sampling)
        // llama.cpp's extensions, for clients that know them.
        if (OptionalInteger(root, "top_k", "$.top_k") is { } topK)
            sampling = sampling with { TopK = (int)InRange(topK, 0, int.MaxValue, "top_k") };
        if (OptionalNumber(root, "min_p", "$.min_p") is { } minP)
            sampling = sampling with { MinP = (float)InRange(minP, 0, 1, "min_p") };
        if (OptionalNumber(root, "repeat_penalty", "$.repeat_penalty") is { } repeat)
            sampling = sampling with { RepeatPenalty = (float)InRange(repeat, 0.01, 100, "repeat_penalty") };
        if (OptionalInteger(root, "seed", "$.seed") is { } seed) sampling = sampling with { Seed = unchecked((ulong)seed) };
        else if (!seedFixed) sampling = sampling with { Seed = unchecked((ulong)Random.Shared.NextInt64()) };

        return new OpenAiRequest
        {
            Model = model, Stream = stream, IncludeUsage = includeUsage, MaxTokens = maxTokens, Sampling = sampling, Stop = Stop(root),
        };
    }

    private static IReadOnlyList<string> Stop(JsonElement root)
    {
        if (!root.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null) return [];
        if (stop.ValueKind == JsonValueKind.String) return [stop.GetString()!];
        if (stop.ValueKind != JsonValueKind.Array) throw WrongType("$.stop", "a string or an array of strings", stop);
        if (stop.GetArrayLength() > MaxStopSequences)
            throw ApiError.BadRequest($"$.stop: {stop.GetArrayLength()} stop sequences; at most {MaxStopSequences}", "stop", "invalid_value");
        var list = new List<string>();
        int i = 0;
        foreach (var s in stop.EnumerateArray())
        {
            if (s.ValueKind != JsonValueKind.String) throw WrongType($"$.stop[{i}]", "a string", s);
            list.Add(s.GetString()!);
            i++;
        }
        return list;
    }

    /// <summary>A message's text: a string, or an array of text parts (other parts, such as images, are refused).</summary>
    private static string Content(JsonElement message, string path)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) throw WrongType(path + ".content", "a string or an array of text parts", content);
        var text = new System.Text.StringBuilder();
        int i = 0;
        foreach (var part in content.EnumerateArray())
        {
            string partPath = $"{path}.content[{i++}]";
            if (part.ValueKind != JsonValueKind.Object) throw WrongType(partPath, "a content part {type, text}", part);
            string? type = OptionalString(part, "type", partPath + ".type");
            if (type != "text")
                throw ApiError.BadRequest($"{partPath}.type: \"{type}\" parts are not supported (text only: this server runs text models)", Param(partPath + ".type"), "unsupported_parameter");
            text.Append(OptionalString(part, "text", partPath + ".text") ?? "");
        }
        return text.ToString();
    }

    private static void RequireObject(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw WrongType("$", "a JSON object", root);
    }

    private static string? OptionalString(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw WrongType(path, "a string", v);
    }

    private static bool? OptionalBool(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw WrongType(path, "true or false", v) };
    }

    private static double? OptionalNumber(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) ? d : throw WrongType(path, "a number", v);
    }

    /// <summary>A whole number; one beyond 64 bits is taken as the largest (only limits get that large, and they are clamped).</summary>
    private static long? OptionalInteger(JsonElement obj, string name, string path)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number) throw WrongType(path, "an integer", v);
        if (v.TryGetInt64(out long l)) return l;
        if (v.TryGetDouble(out double d) && double.IsFinite(d) && Math.Floor(d) == d) return d > 0 ? long.MaxValue : long.MinValue;
        throw WrongType(path, "an integer", v);
    }

    private static double InRange(double value, double min, double max, string name)
        => value >= min && value <= max ? value
            : throw ApiError.BadRequest($"$.{name}: {value.ToString(System.Globalization.CultureInfo.InvariantCulture)} — must be between {min.ToString(System.Globalization.CultureInfo.InvariantCulture)} and {max.ToString(System.Globalization.CultureInfo.InvariantCulture)}", name, "invalid_value");

    private static ApiError WrongType(string path, string expected, JsonElement got)
        => ApiError.BadRequest($"{path}: expected {expected}, got {Describe(got)}", Param(path), "invalid_type");

    private static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => $"{v.GetRawText()}",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    /// <summary>OpenAI's <c>param</c>: the path without the leading "$.".</summary>
    private static string? Param(string path) => path.Length > 2 ? path[2..] : null;
}
