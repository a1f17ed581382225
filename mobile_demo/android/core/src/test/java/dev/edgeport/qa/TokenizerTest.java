package dev.edgeport.qa;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/** BertTokenizer against the `tokenizers` library's output on every fixture question and passage. */
public class TokenizerTest {
    @SuppressWarnings("unchecked")
    private static void check(BertTokenizer tok, String name, String text, Map<String, Object> expected) {
        Encoding e = tok.encode(text);
        assertArrayEquals(name + ": ids", Fixtures.ints(expected.get("ids")), e.ids);
        assertEquals(name + ": tokens", expected.get("tokens"), java.util.Arrays.asList(e.tokens));
        List<Object> offsets = (List<Object>) expected.get("offsets");
        for (int t = 0; t < e.size(); t++) {
            int[] o = Fixtures.ints(offsets.get(t));
            assertEquals(name + ": start of token " + t, o[0], e.start[t]);
            assertEquals(name + ": end of token " + t, o[1], e.end[t]);
        }
        assertArrayEquals(name + ": word ids", Fixtures.ints(expected.get("word_ids")), e.wordIds);
    }

    @Test
    @SuppressWarnings("unchecked")
    public void questionsAndPassagesTokenizeLikeTheTokenizersLibrary() throws Exception {
        BertTokenizer tok = Fixtures.tokenizer();
        int checked = 0;
        for (Map<String, Object> c : Fixtures.cases()) {
            String name = (String) c.get("name");
            check(tok, name + "/question", (String) c.get("question"), (Map<String, Object>) c.get("question_tokens"));
            check(tok, name + "/context", (String) c.get("context"), (Map<String, Object>) c.get("context_tokens"));
            checked++;
        }
        assertTrue("at least 30 cases", checked >= 30);
    }

    @Test
    public void unknownWordIsOneUnkTokenCoveringTheWord() throws Exception {
        // tokenizers 0.23 gives ['[UNK]', '!'] with offsets (0, 3), (3, 4): offsets count code points.
        Encoding e = Fixtures.tokenizer().encode("x\uD835\uDD18y!");
        assertEquals("[UNK]", e.tokens[0]);
        assertEquals(0, e.start[0]);
        assertEquals(3, e.end[0]);
        assertEquals("!", e.tokens[1]);
        assertEquals(3, e.start[1]);
    }

    @Test(expected = IllegalArgumentException.class)
    public void refusesATokenizerThatIsNotBert() throws Exception {
        String tj = Fixtures.read("tokenizer.json").replace("\"BertPreTokenizer\"", "\"Metaspace\"");
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) Json.parse(tj);
        BertTokenizer.fromTokenizerJson(m);
    }
}
