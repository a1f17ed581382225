package dev.edgeport.qa;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;

/**
 * The fixtures made by mobile_demo/scripts/make_fixtures.py from the Python runtime pipeline; their folder
 * is the system property {@code fixtures.dir} (default: ../../fixtures from the core module).
 */
final class Fixtures {
    private static Map<String, Object> doc;

    static Path dir() {
        return Paths.get(System.getProperty("fixtures.dir", "../../fixtures"));
    }

    static String read(String name) throws IOException {
        return new String(Files.readAllBytes(dir().resolve(name)), StandardCharsets.UTF_8);
    }

    @SuppressWarnings("unchecked")
    static synchronized Map<String, Object> doc() throws IOException {
        if (doc == null) doc = (Map<String, Object>) Json.parse(read("qa_fixtures.json"));
        return doc;
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> cases() throws IOException {
        return (List<Map<String, Object>>) doc().get("cases");
    }

    @SuppressWarnings("unchecked")
    static int setting(String key) throws IOException {
        return ((Double) ((Map<String, Object>) doc().get("settings")).get(key)).intValue();
    }

    @SuppressWarnings("unchecked")
    static BertTokenizer tokenizer() throws IOException {
        return BertTokenizer.fromTokenizerJson((Map<String, Object>) Json.parse(read("tokenizer.json")));
    }

    static FeatureConverter converter() throws IOException {
        return new FeatureConverter(tokenizer(), setting("max_seq_len"), setting("doc_stride"),
                setting("max_question_len"));
    }

    static int[] ints(Object list) {
        List<?> l = (List<?>) list;
        int[] a = new int[l.size()];
        for (int k = 0; k < a.length; k++) a[k] = ((Double) l.get(k)).intValue();
        return a;
    }

    /** A window's stored logits, padded with zeros to the static length (padding is masked anyway). */
    static float[] logits(Map<String, Object> window, String key, int seqLen) {
        List<?> l = (List<?>) window.get(key);
        float[] a = new float[seqLen];
        for (int k = 0; k < l.size(); k++) a[k] = ((Double) l.get(k)).floatValue();
        return a;
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> windows(Map<String, Object> c) {
        return (List<Map<String, Object>>) c.get("windows");
    }

    /** The pipeline's answers less its zero-score filler spans (see AnswerDecoder's note). */
    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> positiveAnswers(Map<String, Object> c) {
        List<Map<String, Object>> all = (List<Map<String, Object>>) c.get("answers");
        List<Map<String, Object>> out = new java.util.ArrayList<>();
        for (Map<String, Object> a : all) if ((Double) a.get("score") > 0) out.add(a);
        return out;
    }

    private Fixtures() {
    }
}
