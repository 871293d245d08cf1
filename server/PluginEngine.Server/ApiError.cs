using System.Text.Json.Nodes;

namespace PluginEngine.Server;

/// <summary>
/// A request the server refuses, answered in OpenAI's error shape
/// <c>{"error":{"message","type","param","code"}}</c> with <see cref="Status"/> (docs/serve.md#errors).
/// </summary>
public sealed class ApiError(int status, string message, string type, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static ApiError BadRequest(string message, string? param = null, string? code = null) => new(400, message, "invalid_request_error", param, code);

    public string ToJson() => new JsonObject
    {
        ["error"] = new JsonObject { ["message"] = Message, ["type"] = Type, ["param"] = Param, ["code"] = Code },
    }.ToJsonString();
}
