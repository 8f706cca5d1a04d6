/*
 * catalog.c - the catalogue of protocol events and error codes (DESIGN.md §4).
 *
 * The methods themselves are one table in the daemon (agentd/methods.c: handlers, parameter
 * schemas, summaries); `initialize` sends it to clients. Here: the events and the error codes.
 * Error codes: the JSON-RPC standard ones, then application codes from -32001 down. A code never
 * changes meaning once published; new ones are appended.
 */
#include "protocol.h"

#include <string.h>

static const struct proto_event_info events[] = {
    {"run.created", "a run was accepted"},
    {"text.delta", "a piece of generated text"},
    {"tool_call.done", "the model finished a tool call (name and arguments)"},
    {"tool.result", "a tool returned (output or error)"},
    {"message.sent", "the agent sent a message to another agent"},
    {"mcp.server", "an MCP server of the agent changed state (ready, restarting, failed)"},
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
