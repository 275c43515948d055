/*
 * list.h - an intrusive circular doubly linked list: a node is embedded in its owner (found again
 * with sp_container_of), a list is its own sentinel node, and a node can be unlinked without
 * knowing which list holds it.
 */
#ifndef SP_LIST_H
#define SP_LIST_H

#include <stdbool.h>

typedef struct sp_list {
    struct sp_list *prev, *next;
} sp_list_t;

static inline void sp_list_init(sp_list_t *l)
{
    l->prev = l->next = l;
}

static inline bool sp_list_empty(const sp_list_t *l)
{
    return l->next == l;
}

/* Appends n at the end of l. */
static inline void sp_list_push(sp_list_t *l, sp_list_t *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}

/* Takes n out of its list; n is then an empty list of its own, so unlinking twice is harmless. */
static inline void sp_list_unlink(sp_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#endif
