import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * The fixed workloads of {@code javelin-loadtest bench-overhead}: what profiling
 * costs a JVM is read off how many operations these complete.
 *
 * <pre>
 * java OverheadWorkload KIND THREADS
 *   cpu    HashMap lookups and 64-bit hashing over preallocated keys: no allocation
 *   alloc  byte[] of 64..1087 bytes and concatenated Strings, a few retained for a while
 *   lock   half of every operation inside one synchronized block all threads contend for
 *   mixed  a service-like mix: 50 % cpu, 30 % alloc, 20 % lock operations
 * </pre>
 *
 * Prints {@code ready <pid>} once its threads run, then answers one line of
 * stdin at a time: {@code mark} with {@code mark <System.nanoTime()> <operations
 * completed by all threads>}, {@code exit} by exiting (a JFR recording given a
 * filename is written then). Each thread publishes its own count in a padded
 * slot with a release store, so counting costs the workload no contention.
 */
public final class OverheadWorkload {
    /** Longs between two threads' slots: 128 bytes, no false sharing. */
    private static final int STRIDE = 16;
    /** Per thread: [count, result] at index thread * STRIDE. */
    private static AtomicLongArray slots;

    private static final Object LOCK = new Object();
    /** Guarded by LOCK. */
    private static long shared;

    private static final int KEYS = 1 << 16;
    private static final int RETAINED = 1024;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: OverheadWorkload cpu|alloc|lock|mixed THREADS");
            System.exit(2);
        }
        int kind = java.util.List.of("cpu", "alloc", "lock", "mixed").indexOf(args[0]);
        int threads = Integer.parseInt(args[1]);
        if (kind < 0) {
            System.err.println("unknown workload " + args[0]);
            System.exit(2);
        }
        slots = new AtomicLongArray((threads + 1) * STRIDE);
        for (int t = 0; t < threads; t++) {
            final int index = t;
            Thread worker = new Thread(() -> work(kind, index), "worker-" + t);
            worker.setDaemon(true);
            worker.start();
        }
        System.out.println("ready " + ProcessHandle.current().pid());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (line.equals("mark")) {
                long now = System.nanoTime();
                long total = 0;
                for (int t = 0; t < threads; t++) {
                    total += slots.get(t * STRIDE);
                }
                System.out.println("mark " + now + " " + total);
                System.out.flush();
            } else if (line.equals("exit")) {
                break;
            }
        }
        // Also when stdin closes: the harness is gone.
        System.exit(0);
    }

    /** One worker's loop: the operation of its kind, counted after each. */
    private static void work(int kind, int index) {
        State s = new State(index);
        long count = 0;
        long result = 0;
        while (true) {
            switch (kind) {
                case 0:
                    result += cpu(s);
                    break;
                case 1:
                    result += alloc(s);
                    break;
                case 2:
                    result += lock(s);
                    break;
                default:
                    result += mixed(s);
                    break;
            }
            count++;
            slots.lazySet(index * STRIDE, count);
            // Observable, so the JIT cannot drop the work.
            slots.lazySet(index * STRIDE + 1, result);
        }
    }

    /** A worker's own data: nothing here is shared. */
    private static final class State {
        final HashMap<Integer, Integer> map = new HashMap<>();
        final Integer[] keys = new Integer[KEYS];
        final Object[] retained = new Object[RETAINED];
        long seed;

        State(int index) {
            seed = 0x9E3779B97F4A7C15L * (index + 1);
            for (int i = 0; i < KEYS; i++) {
                keys[i] = i * 7919;
                // Half the keys present: lookups hit and miss.
                if ((i & 1) == 0) {
                    map.put(keys[i], i);
                }
            }
        }

        long next() {
            seed ^= seed << 13;
            seed ^= seed >>> 7;
            seed ^= seed << 17;
            return seed;
        }
    }

    /** MurmurHash3's 64-bit finalizer. */
    private static long mix(long h) {
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        h *= 0xc4ceb9fe1a85ec53L;
        h ^= h >>> 33;
        return h;
    }

    private static long cpu(State s) {
        long acc = 0;
        for (int i = 0; i < 64; i++) {
            Integer v = s.map.get(s.keys[(int) (s.next() >>> 40) & (KEYS - 1)]);
            acc = mix(acc + (v == null ? i : v));
        }
        return acc;
    }

    private static long alloc(State s) {
        long acc = 0;
        for (int i = 0; i < 4; i++) {
            long r = s.next();
            int n = 64 + (int) ((r >>> 33) & 1023);
            byte[] bytes = new byte[n];
            bytes[0] = (byte) r;
            bytes[n - 1] = (byte) (r >>> 8);
            String text = "item-" + (r & 0xffff) + "-" + n;
            // Some survive a while (a young collection or two), as a cache's would.
            s.retained[(int) (r >>> 50) & (RETAINED - 1)] = (i & 1) == 0 ? bytes : text;
            acc += bytes[n - 1] + text.length();
        }
        return acc;
    }

    private static long lock(State s) {
        long outside = s.next();
        for (int i = 0; i < 16; i++) {
            outside = mix(outside);
        }
        synchronized (LOCK) {
            long v = shared + outside;
            for (int i = 0; i < 16; i++) {
                v = mix(v);
            }
            shared = v;
            return v;
        }
    }

    private static long mixed(State s) {
        long pick = (s.next() >>> 32) % 10;
        if (pick < 5) {
            return cpu(s);
        }
        if (pick < 8) {
            return alloc(s);
        }
        return lock(s);
    }
}
