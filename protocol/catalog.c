/*
 * catalog.c - the catalogue of protocol methods, events and error codes (DESIGN.md §4).
 *
 * One table each; `initialize` sends the implemented methods, agentctl and the docs print them.
 * Error codes: the JSON-RPC standard ones, then application codes from -32001 down. A code never
 * changes meaning once published; new ones are appended.
 */
#include "protocol.h"

#include <string.h>

static const struct proto_method_info methods[] = {
    {"initialize", "handshake: protocol version and capabilities", true},
    {"ping", "liveness check; answers {}", true},
    {"status", "daemon version, uptime, connections, agents, data dir", true},
    {"agent.create", "create an agent from a spec, a definition file's text, or a path", true},
    {"agent.list", "list agents", true},
    {"agent.get", "one agent with its full normalized spec", true},
    {"agent.update", "replace an agent's spec; bumps its version", true},
    {"agent.delete", "delete an agent with its sessions and messages", true},
    {"agent.export", "an agent's definition as JSON", false},
    {"agent.import", "create or update an agent from an export", false},
    {"session.create", "start a conversation with an agent", true},
    {"session.list", "list sessions, optionally of one agent", true},
    {"session.get", "one session with its messages", true},
    {"session.delete", "delete a session and its messages", true},
    {"run.create", "start an agent run on a session", true},
    {"run.get", "one run's state", true},
    {"run.list", "list runs, of an agent or a session", true},
    {"run.cancel", "cancel a run", true},
    {"run.subscribe", "stream a run's events after a sequence number", true},
    {"run.input", "answer a run waiting for input or approval", false},
    {"task.submit", "queue a background task", false},
    {"task.list", "list background tasks", false},
    {"task.get", "one task", false},
    {"task.cancel", "cancel a task", false},
    {"task.wait", "wait for a task to finish", false},
    {"memory.search", "search an agent's memories", true},
    {"memory.add", "store a memory", true},
    {"sandbox.create", "start a named code-interpreter session (a sandboxed Python)", true},
    {"sandbox.exec", "run code: one-shot (python or shell) or a cell in a named session", true},
    {"sandbox.interrupt", "interrupt a session's running cell (KeyboardInterrupt)", true},
    {"sandbox.files.put", "write a file into a session's workspace", true},
    {"sandbox.files.get", "read a file from a session's workspace", true},
    {"sandbox.list", "list sessions, and how this host enforces sandbox limits", true},
    {"sandbox.restart", "restart a session's interpreter (fresh state and workspace)", true},
    {"sandbox.kill", "destroy a session", true},
    {"web.fetch", "fetch an http(s) page as text (SSRF guard, size and time limits)", true},
    {"web.cancel", "cancel a running web.fetch by its request_id", true},
    {"tools.list", "the built-in tools: names, descriptions, argument schemas", true},
    {"tools.call", "call a tool directly", false},
    {"engine.generate", "generate text or a chat reply (OpenAI chat-completions parameters)", true},
    {"engine.cancel", "cancel a running engine.generate by its request_id", true},
    {"engine.tokenize", "token ids of a text with the loaded model", true},
    {"model.list", "list models", true},
    {"model.status", "loaded model and engine state: KV pages, batch, tokens/s", true},
    {"agent.send", "send a message to another agent", false},
};

static const struct proto_event_info events[] = {
    {"run.created", "a run was accepted"},
    {"text.delta", "a piece of generated text"},
    {"tool_call.done", "the model finished a tool call (name and arguments)"},
    {"tool.result", "a tool returned (output or error)"},
    {"message.sent", "the agent sent a message to another agent"},
    {"run.completed", "the run ended with an answer"},
    {"run.failed", "the run ended with an error"},
    {"run.cancelled", "the run was cancelled"},
    {"run.event", "notification carrying one event of a subscribed run"},
    {"sandbox.output", "output of a running sandbox.exec with stream: true"},
    {"sandbox.expired", "an idle session was destroyed"},
    {"engine.delta", "a piece of text of an engine.generate with stream: true"},
};

static const struct proto_error_info errors[] = {
    {-32700, AG_EPARSE, "parse error: the line is not valid JSON"},
    {-32600, AG_EPROTO, "invalid request: not a JSON-RPC 2.0 request, or a batch"},
    {-32601, AG_ENOMETHOD, "method not found"},
    {-32602, AG_EPARAMS, "invalid params: a parameter is missing or has the wrong type"},
    {-32603, AG_EINTERNAL, "internal error"},
    {-32001, AG_ENOTFOUND, "not found"},
    {-32002, AG_EEXISTS, "already exists"},
    {-32003, AG_EBUSY, "busy, or a version conflict"},
    {-32004, AG_ECTXOVERFLOW, "context overflow"},
    {-32005, AG_ESANDBOX, "sandbox gone"},
    {-32006, AG_EQUOTA, "quota exceeded"},
    {-32007, AG_ETOOL, "tool failed"},
    {-32008, AG_ESPEC, "invalid agent definition"},
    {-32009, AG_ETOOBIG, "too large"},
    {-32010, AG_ESHUTDOWN, "the daemon is shutting down"},
    {-32011, AG_EDB, "storage error"},
    {-32012, AG_ECANCELLED, "cancelled"},
    {-32013, AG_EUNSUPPORTED, "not supported by this build"},
    {-32014, AG_ETIMEOUT, "timed out"},
    {-32015, AG_ELOCKED, "locked"},
    {-32016, AG_EIO, "input/output error"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const struct proto_method_info *proto_methods(size_t *n)
{
    *n = COUNT(methods);
    return methods;
}

const struct proto_event_info *proto_events(size_t *n)
{
    *n = COUNT(events);
    return events;
}

const struct proto_error_info *proto_errors(size_t *n)
{
    *n = COUNT(errors);
    return errors;
}

const struct proto_method_info *proto_method_find(const char *name)
{
    for (size_t i = 0; i < COUNT(methods); i++)
        if (strcmp(methods[i].name, name) == 0) return &methods[i];
    return NULL;
}

int proto_rpc_code(int ag_code)
{
    if (ag_code == AG_EINVAL) return -32602;
    for (size_t i = 0; i < COUNT(errors); i++)
        if (errors[i].ag_code == ag_code) return errors[i].rpc_code;
    return -32603;
}

int proto_ag_code(int rpc_code)
{
    for (size_t i = 0; i < COUNT(errors); i++)
        if (errors[i].rpc_code == rpc_code) return errors[i].ag_code;
    return AG_EINTERNAL;
}
