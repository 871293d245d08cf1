namespace PluginEngine.Core.Chat;

/// <summary>One message of a conversation: its role (system, user, assistant or tool) and text.</summary>
public sealed record ChatTurn(string Role, string Content)
{
    public static ChatTurn System(string content) => new(ChatRoles.System, content);
    public static ChatTurn User(string content) => new(ChatRoles.User, content);
    public static ChatTurn Assistant(string content) => new(ChatRoles.Assistant, content);
}

/// <summary>The roles a conversation may use (what chat templates know).</summary>
public static class ChatRoles
{
    public const string System = "system";
    public const string User = "user";
    public const string Assistant = "assistant";
    public const string Tool = "tool";

    public static IReadOnlyList<string> All { get; } = [System, User, Assistant, Tool];
}

/// <summary>A conversation the template cannot format (no messages, an unknown role, a template that refused it).</summary>
public sealed class ChatFormatException(string message, Exception? inner = null) : Exception(message, inner);
