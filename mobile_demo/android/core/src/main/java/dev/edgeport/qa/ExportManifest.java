package dev.edgeport.qa;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The parts of an export's {@code edgeport.json} the app needs (the contract is edgeport's
 * {@code edgeport/manifest.py}): the artifact file, task, precision, input and output tensor names (the
 * TFLite signature's names), the static sequence length and the tokenizer file.
 */
public final class ExportManifest {
    /** One tensor of the signature: name, numpy dtype name and static shape. */
    public static final class Tensor {
        public final String name;
        public final String dtype;
        public final int[] shape;

        Tensor(String name, String dtype, int[] shape) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
        }
    }

    public final String family;
    public final String task;
    public final String target;
    public final String artifact;
    public final String precision;
    public final List<Tensor> inputs;
    public final List<Tensor> outputs;
    public final int maxSequenceLength;
    public final String tokenizerFile;
    /** The TFLite signature to run (edgeport.json {@code signature_key}); null in manifests written before it. */
    public final String signatureKey;
    public final boolean randomWeights;
    public final long sizeBytes;

    private ExportManifest(Map<String, Object> m) {
        family = str(m, "family");
        task = str(m, "task");
        target = str(m, "target");
        artifact = str(m, "artifact");
        precision = m.containsKey("precision") ? str(m, "precision") : "fp32";
        inputs = tensors(m.get("inputs"));
        outputs = tensors(m.get("outputs"));
        maxSequenceLength = ((Double) m.get("max_sequence_length")).intValue();
        Object tok = m.get("tokenizer");
        tokenizerFile = tok instanceof Map ? str(cast(tok), "file") : null;
        Object key = m.get("signature_key");
        signatureKey = key instanceof String ? (String) key : null;
        randomWeights = Boolean.TRUE.equals(m.get("random_weights"));
        Object size = m.get("size_bytes");
        sizeBytes = size == null ? 0 : ((Double) size).longValue();
    }

    /**
     * Reads and checks a manifest: a question-answering TFLite export with a tokenizer, inputs
     * input_ids / attention_mask (/ token_type_ids), outputs start_logits and end_logits.
     *
     * @throws IllegalArgumentException naming what is missing or of the wrong kind
     */
    public static ExportManifest parse(String json) {
        ExportManifest m = new ExportManifest(cast(Json.parse(json)));
        if (!"question-answering".equals(m.task))
            throw new IllegalArgumentException("edgeport.json: task is '" + m.task + "', not question-answering");
        if (!"tflite".equals(m.target))
            throw new IllegalArgumentException("edgeport.json: target is '" + m.target + "', not tflite");
        if (m.tokenizerFile == null) throw new IllegalArgumentException("edgeport.json: the export has no tokenizer");
        m.input("input_ids");
        m.input("attention_mask");
        m.output("start_logits");
        m.output("end_logits");
        return m;
    }

    /** The static sequence length of input_ids (shape [1, S]). */
    public int seqLen() {
        int[] s = input("input_ids").shape;
        return s[s.length - 1];
    }

    /** @throws IllegalArgumentException when there is no such input */
    public Tensor input(String name) {
        return find(inputs, name, "input");
    }

    /** @throws IllegalArgumentException when there is no such output */
    public Tensor output(String name) {
        return find(outputs, name, "output");
    }

    /** True when the signature takes this input (DeBERTa-style exports have no token_type_ids). */
    public boolean hasInput(String name) {
        for (Tensor t : inputs) if (t.name.equals(name)) return true;
        return false;
    }

    private static Tensor find(List<Tensor> ts, String name, String kind) {
        for (Tensor t : ts) if (t.name.equals(name)) return t;
        throw new IllegalArgumentException("edgeport.json: no " + kind + " named " + name);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> cast(Object o) {
        if (!(o instanceof Map)) throw new IllegalArgumentException("edgeport.json: expected an object");
        return (Map<String, Object>) o;
    }

    private static String str(Map<String, Object> m, String key) {
        Object v = m.get(key);
        if (!(v instanceof String)) throw new IllegalArgumentException("edgeport.json: no '" + key + "'");
        return (String) v;
    }

    private static List<Tensor> tensors(Object o) {
        List<Tensor> out = new ArrayList<>();
        if (!(o instanceof List)) return out;
        for (Object e : (List<?>) o) {
            Map<String, Object> t = cast(e);
            List<?> shape = (List<?>) t.get("shape");
            int[] dims = new int[shape.size()];
            for (int k = 0; k < dims.length; k++)
                dims[k] = shape.get(k) instanceof Double ? ((Double) shape.get(k)).intValue() : -1;
            out.add(new Tensor(str(t, "name"), str(t, "dtype"), dims));
        }
        return out;
    }
}
