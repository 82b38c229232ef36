package dash

import (
	"slices"
	"strings"
)

// entry is one row of a list: the value and whether the filter shows it.
type entry[R any] struct {
	id    string
	v     R
	shown bool
}

// list keeps rows by id and two orders over them: every row sorted, and the
// rows the filter keeps in the same order. A change to one row moves it in
// both with a binary search and one copy, so a stream of updates to 100,000
// jobs never re-sorts; a new sort column re-sorts once, a new filter rescans
// the sorted order once, and both wait until the list is next looked at.
type list[R any] struct {
	byID map[string]*entry[R]
	// sorted holds every row; valid unless resort.
	sorted []*entry[R]
	// order holds the shown rows; valid unless refilter.
	order []*entry[R]

	cmp  func(a, b *R) int
	keep func(*R) bool // nil keeps every row

	resort   bool
	refilter bool
}

func newList[R any](cmp func(a, b *R) int) *list[R] {
	return &list[R]{byID: map[string]*entry[R]{}, cmp: cmp}
}

// compare orders rows by the sort column, then by id, so no two rows tie
// and a binary search finds exactly the row it looks for.
func (l *list[R]) compare(a, b *entry[R]) int {
	if c := l.cmp(&a.v, &b.v); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func (l *list[R]) len() int { return len(l.byID) }

func (l *list[R]) get(id string) (*R, bool) {
	e, ok := l.byID[id]
	if !ok {
		return nil, false
	}
	return &e.v, true
}

// setSort changes the order; the rows are sorted again when next shown.
func (l *list[R]) setSort(cmp func(a, b *R) int) {
	l.cmp = cmp
	l.resort = true
}

// setFilter changes which rows show; they are picked again when next shown.
func (l *list[R]) setFilter(keep func(*R) bool) {
	l.keep = keep
	l.refilter = true
}

// invalidate re-checks every row against the filter, for when what the
// filter reads about a row (a robot's name for a job) changed elsewhere.
func (l *list[R]) invalidate() {
	if l.keep != nil {
		l.refilter = true
	}
}

func (l *list[R]) kept(v *R) bool { return l.keep == nil || l.keep(v) }

// replace drops every row and takes rows instead: a new snapshot.
func (l *list[R]) replace(ids []string, rows []R) {
	l.byID = make(map[string]*entry[R], len(rows))
	l.sorted = make([]*entry[R], 0, len(rows))
	for i := range rows {
		e := &entry[R]{id: ids[i], v: rows[i]}
		l.byID[e.id] = e
		l.sorted = append(l.sorted, e)
	}
	l.resort = true
	l.refilter = true
}

// put adds or changes a row.
func (l *list[R]) put(id string, v R) {
	e, ok := l.byID[id]
	if !ok {
		e = &entry[R]{id: id, v: v}
		l.byID[id] = e
		if l.resort {
			l.sorted = append(l.sorted, e)
		} else {
			l.sorted = insertSorted(l.sorted, e, l.compare)
		}
		if !l.refilter && l.kept(&e.v) {
			e.shown = true
			l.order = insertSorted(l.order, e, l.compare)
		}
		return
	}
	// Take it out at its old place, change it, put it back at its new one.
	if !l.resort {
		l.sorted = removeSorted(l.sorted, e, l.compare)
	}
	if !l.refilter && e.shown {
		l.order = removeSorted(l.order, e, l.compare)
	}
	e.v = v
	if !l.resort {
		l.sorted = insertSorted(l.sorted, e, l.compare)
	}
	if !l.refilter {
		e.shown = l.kept(&e.v)
		if e.shown {
			l.order = insertSorted(l.order, e, l.compare)
		}
	}
}

// remove drops a row.
func (l *list[R]) remove(id string) {
	e, ok := l.byID[id]
	if !ok {
		return
	}
	delete(l.byID, id)
	if l.resort {
		l.sorted = slices.DeleteFunc(l.sorted, func(x *entry[R]) bool { return x == e })
	} else {
		l.sorted = removeSorted(l.sorted, e, l.compare)
	}
	if !l.refilter && e.shown {
		l.order = removeSorted(l.order, e, l.compare)
	}
}

// rows returns the shown rows in order, bringing the orders up to date
// first if a sort or filter change left them stale.
func (l *list[R]) rows() []*entry[R] {
	if l.resort {
		slices.SortFunc(l.sorted, l.compare)
		l.resort = false
		l.refilter = true
	}
	if l.refilter {
		l.order = l.order[:0]
		for _, e := range l.sorted {
			e.shown = l.kept(&e.v)
			if e.shown {
				l.order = append(l.order, e)
			}
		}
		l.refilter = false
	}
	return l.order
}

// index finds a shown row's position in rows(), or -1.
func (l *list[R]) index(id string) int {
	e, ok := l.byID[id]
	if !ok {
		return -1
	}
	order := l.rows()
	if !e.shown {
		return -1
	}
	i, found := slices.BinarySearchFunc(order, e, l.compare)
	if !found || order[i] != e {
		return -1
	}
	return i
}

func insertSorted[R any](s []*entry[R], e *entry[R], cmp func(a, b *entry[R]) int) []*entry[R] {
	i, _ := slices.BinarySearchFunc(s, e, cmp)
	return slices.Insert(s, i, e)
}

func removeSorted[R any](s []*entry[R], e *entry[R], cmp func(a, b *entry[R]) int) []*entry[R] {
	i, found := slices.BinarySearchFunc(s, e, cmp)
	if found && s[i] == e {
		return slices.Delete(s, i, i+1)
	}
	// Not where its values say: someone changed it in place. Find it anyway.
	return slices.DeleteFunc(s, func(x *entry[R]) bool { return x == e })
}
