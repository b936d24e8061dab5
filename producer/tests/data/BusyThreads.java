/**
 * N threads spinning on arithmetic (no allocation, no locks), for the CPU
 * accuracy tests: more runnable threads than JFR's ExecutionSample takes per
 * period (5). Prints "busy-threads pid <pid>" once every thread runs.
 * Usage: java BusyThreads.java [threads]
 */
public final class BusyThreads {
    static volatile long sink;

    static long spin(long seed) {
        long x = seed;
        for (int i = 0; i < 1_000_000; i++) {
            x = x * 6364136223846793005L + 1442695040888963407L;
            x ^= x >>> 29;
        }
        return x;
    }

    public static void main(String[] args) throws Exception {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : 8;
        java.util.concurrent.CountDownLatch running = new java.util.concurrent.CountDownLatch(threads);
        for (int t = 0; t < threads; t++) {
            final long seed = t;
            Thread worker = new Thread(() -> {
                running.countDown();
                long x = seed;
                while (true) {
                    x = spin(x);
                    sink = x;
                }
            }, "busy-" + t);
            worker.setDaemon(true);
            worker.start();
        }
        running.await();
        System.out.println("busy-threads pid " + ProcessHandle.current().pid());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
