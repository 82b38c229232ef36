package expr

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"cel.dev/cel-go/cel"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
)

// TestPrattParsesAsANTLR holds the parser expressions are read with to the
// syntax trees cel.Env's own parser makes, node ids and positions
// included, so that switching parsers changed what no expression means.
func TestPrattParsesAsANTLR(t *testing.T) {
	corpus := []string{
		// Literals.
		"1", "-1", "1u", "0x1F", "0x1Fu", "-0x10", "1.5", "-1.5", "1e3", "1.5e-3", ".5", "-9223372036854775808",
		"'a'", `"a"`, `'a\'b'`, `"\u00e9\x41\101\n"`, `r'a\nb'`, `'''a'b'''`, `"""a"b"""`, `b'\xff'`, `b"abc"`,
		"true", "false", "null", "[]", "{}", "[1, 2,]", "{'a': 1, 'b': 2,}",
		// Operators and their precedence.
		"1 + 2 * 3 - 4 / 5 % 6", "(1 + 2) * 3", "1 - -1", "1+-1+-1+-1", "steps.a+-1+-1", "--1", "-(-1)", "- -1", "!true", "!!true",
		"1 < 2 && 2 <= 3 || 3 > 4 && 4 >= 5", "a == b != c", "a in [1, 2]", "!(a in b)", "a ? b : c ? d : e", "a || b ? c : d",
		"-a.b", "-1.size()", "-x[0]", "a && b && c && d", "a || b || c",
		// Selection, indexing and calls.
		"steps.fetch.outputs.rows.size() > 0 && inputs.region == 'eu'", "a.b.c", ".a.b", "a[0][1]", "a['k'].b", "f(1, 2)",
		"a.f()", "a.f(1).g(2)", "size(inputs) + 1", "has(a.b)", "has(a.b.c)", "int(inputs.n) * 2", "string(1) + 'a'",
		"'%s-%d'.format(['a', 1])", "'a,b'.split(',').join('-')", "a.`b-c`", "math.greatest(1, 2)", "base64.encode(b'a')",
		// Macros.
		"[1, 2].all(x, x > 0)", "[1, 2].exists(x, x > 1)", "[1, 2].exists_one(x, x > 1)", "[1, 2].map(x, x * 2)",
		"[1, 2].map(x, x > 1, x * 2)", "[1, 2].filter(x, x > 1)", "{'a': 1}.all(k, k == 'a')",
		"steps.a.outputs.rows.all(r, r > inputs.n) && {'k': item}.size() > index && steps.b.x.startsWith(inputs.s)",
		"lists.range(3).map(i, i).sortBy(x, -x)", "[[1], [2]].flatten()", "a.map(x, x.map(y, y + 1))",
		// Whitespace and comments.
		"  1 +\n\t2 // two\n", "a\n.b\n.c",
		// Errors: both parsers must refuse them.
		"1 +", "(", ")", "[[[[", "{'a': 1, 'b' 2}", "a.", "1 2", "'unterminated", "a ? b", "in", "a.if", "has(a)", "1 = 2",
		"a.?b", "[?a]", "f(,)", "a..b", "`a`", "0x", "1e", "18446744073709551616u", "9223372036854775808",
	}
	// Random expressions from the grammar's productions, so that the
	// corpus does not only test what its writer thought of.
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		corpus = append(corpus, randomExpr(r, 3))
	}
	// Where the trees differ in what does not change the meaning.
	known := map[string]cmp.Option{
		// The Pratt parser puts a leading-dot name at its dot, the
		// ANTLR one after it: an error there names a column one less.
		".a.b": protocmp.IgnoreFields(&exprpb.SourceInfo{}, "positions"),
	}
	for _, src := range corpus {
		want, wantIss := base.Parse(src)
		got, gotIss := parse(src)
		if (wantIss.Err() != nil) != (gotIss.Err() != nil) {
			t.Errorf("%q: ANTLR error %v, Pratt error %v", src, wantIss.Err(), gotIss.Err())
			continue
		}
		if wantIss.Err() != nil {
			continue
		}
		if d := cmp.Diff(parsedProto(t, want), parsedProto(t, got), protocmp.Transform(), known[src]); d != "" {
			t.Errorf("%q: trees differ (-ANTLR +Pratt):\n%s", src, d)
		}
	}
}

func parsedProto(t *testing.T, a *cel.Ast) proto.Message {
	t.Helper()
	pe, err := cel.AstToParsedExpr(a)
	if err != nil {
		t.Fatal(err)
	}
	return pe
}

func randomExpr(r *rand.Rand, depth int) string {
	atoms := []string{"1", "-1", "2u", "1.5", "-0.5", "'s'", "b'x'", "true", "null", "a", "inputs.n", "steps.a.outputs", "item", "[1]", "{'k': 1}"}
	if depth == 0 {
		return atoms[r.IntN(len(atoms))]
	}
	sub := func() string { return randomExpr(r, depth-1) }
	switch r.IntN(12) {
	case 0, 1:
		return atoms[r.IntN(len(atoms))]
	case 2, 3, 4:
		ops := []string{"+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in"}
		sep := []string{"", " "}[r.IntN(2)]
		return sub() + sep + ops[r.IntN(len(ops))] + sep + sub()
	case 5:
		return []string{"-", "!", "--", "!!", "- "}[r.IntN(5)] + sub()
	case 6:
		return "(" + sub() + ")"
	case 7:
		return sub() + " ? " + sub() + " : " + sub()
	case 8:
		return sub() + "." + []string{"x", "size()", "startsWith('a')", "all(v, v > 0)", "map(v, v + 1)"}[r.IntN(5)]
	case 9:
		return sub() + "[" + sub() + "]"
	case 10:
		return fmt.Sprintf("[%s, %s]", sub(), sub())
	}
	return fmt.Sprintf("f(%s)", strings.Join([]string{sub(), sub()}, ", "))
}
