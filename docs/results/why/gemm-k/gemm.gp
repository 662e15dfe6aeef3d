# b3 gemm: GFLOP/s vs size (k varied, the others 1024) | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, row-major
# Made by b3. Render with:  gnuplot gemm.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'gemm.png'
set title "b3 gemm: GFLOP/s vs size (k varied, the others 1024) | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, row-major\nmean +- 1 sample std over 5 timed repeats per shape" noenhanced
set xlabel 'k' noenhanced
set ylabel 'GFLOP/s' noenhanced
set grid
set yrange [0:*]
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, 0, 0
set arrow from 128, graph 0 to 128, graph 1 nohead dashtype 2 lc rgb '#999999'
plot \
  'gemm.dat' index 0 using 1:2 with lines lc rgb '#bbbbbb' title 'all sizes', \
  'gemm.dat' index 1 using 1:2:3 with yerrorbars pt 7 ps 1.3 lc rgb '#d62728' title 'multiple of 64', \
  'gemm.dat' index 2 using 1:2:3 with yerrorbars pt 5 ps 1.3 lc rgb '#1f77b4' title 'multiple of 8', \
  'gemm.dat' index 3 using 1:2:3 with yerrorbars pt 9 ps 1.3 lc rgb '#555555' title 'other'
