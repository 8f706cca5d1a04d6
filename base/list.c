/*
 * list.c - the intrusive doubly linked list of base.h: a circular list with a head node, so
 * no operation tests for the ends.
 */
#include "base.h"

void ag_list_init(struct ag_list *l)
{
    l->prev = l->next = l;
}

bool ag_list_empty(const struct ag_list *l)
{
    return l->next == l;
}

static void link_between(struct ag_list *node, struct ag_list *prev, struct ag_list *next)
{
    node->prev = prev;
    node->next = next;
    prev->next = node;
    next->prev = node;
}

void ag_list_insert_head(struct ag_list *l, struct ag_list *node)
{
    link_between(node, l, l->next);
}

void ag_list_insert_tail(struct ag_list *l, struct ag_list *node)
{
    link_between(node, l->prev, l);
}

void ag_list_remove(struct ag_list *node)
{
    if (!node->next) return; /* zeroed: on no list */
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

struct ag_list *ag_list_pop(struct ag_list *l)
{
    if (ag_list_empty(l)) return NULL;
    struct ag_list *node = l->next;
    ag_list_remove(node);
    return node;
}

void ag_list_move(struct ag_list *from, struct ag_list *to)
{
    if (ag_list_empty(from)) return;
    struct ag_list *first = from->next, *last = from->prev;
    first->prev = to->prev;
    to->prev->next = first;
    last->next = to;
    to->prev = last;
    ag_list_init(from);
}
