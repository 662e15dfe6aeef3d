# b3 gemm: GFLOP/s vs size (M = N = K) | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, row-major
# Made by b3. Render with:  gnuplot gemm.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'gemm.png'
set title "b3 gemm: GFLOP/s vs size (M = N = K) | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, row-major\nmean +- 1 sample std over 5 timed repeats per shape" noenhanced
set xlabel 'M = N = K' noenhanced
set ylabel 'GFLOP/s' noenhanced
set grid
set yrange [0:*]
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, 0, 0
set logscale x 2
set arrow from 128, graph 0 to 128, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 192, graph 0 to 192, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 256, graph 0 to 256, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 320, graph 0 to 320, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 384, graph 0 to 384, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 448, graph 0 to 448, graph 1 nohead dashtype 2 lc rgb '#999999'
set arrow from 512, graph 0 to 512, graph 1 nohead dashtype 2 lc rgb '#999999'
plot \
  'gemm.dat' index 0 using 1:2 with lines lc rgb '#bbbbbb' title 'all sizes', \
  'gemm.dat' index 1 using 1:2:3 with yerrorbars pt 7 ps 1.3 lc rgb '#d62728' title 'multiple of 64', \
  'gemm.dat' index 2 using 1:2:3 with yerrorbars pt 5 ps 1.3 lc rgb '#1f77b4' title 'multiple of 8', \
  'gemm.dat' index 3 using 1:2:3 with yerrorbars pt 9 ps 1.3 lc rgb '#555555' title 'other'
