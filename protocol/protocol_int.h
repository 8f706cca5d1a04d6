/*
 * protocol_int.h - helpers shared by protocol/'s files and nobody else.
 */
#ifndef PROTO_PROTOCOL_INT_H
#define PROTO_PROTOCOL_INT_H

/* The name in keys (NULL-terminated) that key most likely misspells: within two edits, or
 * one that key starts (at least three characters of it); NULL when none is close. Used for
 * "unknown parameter (did you mean '...'?)". */
const char *proto__closest_key(const char *key, const char *const *keys);

#endif
